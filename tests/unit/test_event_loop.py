"""--event-loop: uvloop where it is installed, asyncio's own by name or without it; the
system clock's waits never end before their time on either loop."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from jobwheel.server.clock import SYSTEM_CLOCK, timer_delay
from jobwheel.server.event_loop import loop_factory, running_loop_name
from jobwheel.server.startup import StartupError

T = TypeVar("T")


def _run_on(choice: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """main() run on the loop `choice` names (skipped where uvloop is not installed)."""
    if choice == "uvloop":
        pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main())


def _loop_of(choice: str) -> str:
    return _run_on(choice, _name)


async def _name() -> str:
    return running_loop_name()


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_its_own() -> None:
    uvloop = pytest.importorskip("uvloop")
    assert _loop_of("auto") == _loop_of("uvloop") == f"uvloop {uvloop.__version__}"
    assert _loop_of("asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory("auto") is None
    with pytest.raises(StartupError, match="uvloop is not installed"):
        loop_factory("uvloop")


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_system_clock_sleeps_never_end_early(choice: str) -> None:
    # uvloop rounds a timer to the nearest millisecond: a wait under half of one ended at
    # once, and the scheduler, waiting for a job due that soon, spun until it came
    async def lateness() -> list[float]:
        late = []
        for delay in (0.0001, 0.0004, 0.0006, 0.0015, 0.0024):
            for _ in range(5):
                start = time.monotonic()
                await SYSTEM_CLOCK.sleep(delay)
                late.append(time.monotonic() - start - delay)
        return late

    late = _run_on(choice, lateness)
    assert min(late) >= 0, late


@pytest.mark.parametrize(
    ("seconds", "timer"),
    [(0.0, 0.0), (-1.0, -1.0), (0.0001, 0.001), (0.0004, 0.001), (0.001, 0.001),
     (0.0010001, 0.002), (0.003, 0.003), (2.5, 2.5), (86_400.0, 86_400.0),
     (86_400.5, 86_400.0), (math.inf, 86_400.0)],
)  # fmt: skip
def test_timer_delays_are_whole_milliseconds_up_to_a_day(seconds: float, timer: float) -> None:
    assert timer_delay(seconds) == timer


@pytest.mark.parametrize("choice", ["uvloop", "asyncio"])
def test_system_clock_sleeps_forever_until_cancelled_and_nan_is_a_turn(choice: str) -> None:
    async def waits() -> None:
        await asyncio.wait_for(SYSTEM_CLOCK.sleep(math.nan), 1)
        forever = asyncio.ensure_future(SYSTEM_CLOCK.sleep(math.inf))
        await asyncio.sleep(0.01)
        assert not forever.done()
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever

    _run_on(choice, waits)
