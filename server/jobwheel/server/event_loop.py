"""The event loop the server runs on (--event-loop): uvloop where it is installed, else
asyncio's own.

Every gRPC call, database reply and timer passes through the loop's own Python: its ready
queue, futures and timer heap. uvloop's are compiled: with 64 callers of EnqueueJob the server
answered 14-19% more calls on it (`python -m bench --only enqueue`). Its timers count whole
milliseconds, rounding a wait to the nearest (clock.timer_delay rounds up for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from jobwheel.server.startup import StartupError

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str) -> LoopFactory | None:
    """The factory of the loop `choice` (Settings.event_loop) names; None: asyncio's own.
    Raises StartupError when uvloop is asked for by name and is not installed."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StartupError(
                "--event-loop uvloop: uvloop is not installed (pip install uvloop, or "
                "--event-loop asyncio)"
            ) from None
        return None
    return uvloop.new_event_loop


def running_loop_name() -> str:
    """The running loop's name as the start-up line gives it: "uvloop 0.23.0" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    if module.startswith("uvloop"):
        import uvloop

        return f"uvloop {getattr(uvloop, '__version__', '')}".rstrip()
    return "asyncio"
