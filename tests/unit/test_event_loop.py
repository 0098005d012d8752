"""--event-loop: uvloop where it is installed, asyncio's own by name or without it; the
system clock's waits never end before their time on either loop."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
import uvloop
from jobwheel.server.clock import SYSTEM_CLOCK
from jobwheel.server.event_loop import loop_factory, running_loop_name
from jobwheel.server.startup import StartupError


def _loop_of(choice: str) -> str:
    factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_name())


async def _name() -> str:
    return running_loop_name()


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_its_own() -> None:
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

    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        late = runner.run(lateness())
    assert min(late) >= 0, late
