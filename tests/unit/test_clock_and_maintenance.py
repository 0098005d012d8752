"""The fake clock, signals, and maintenance duties run on their intervals (no I/O)."""

from __future__ import annotations

import asyncio

from jobwheel.server.clock import FakeClock
from jobwheel.server.maintenance import Duty, Maintenance
from jobwheel.server.model import SECOND
from jobwheel.server.signals import Signal

NOW = 1_800_000_000 * SECOND


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fake_clock_wakes_sleepers_when_their_time_comes() -> None:
    clock = FakeClock(NOW)
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(seconds)

    tasks = [asyncio.create_task(sleeper(s)) for s in (2.0, 1.0, 3.0)]
    await settle()
    clock.advance(SECOND)
    await settle()
    assert woke == [1.0] and clock.sleepers == 2
    clock.advance(2 * SECOND)
    await asyncio.gather(*tasks)
    assert woke == [1.0, 2.0, 3.0] and clock.monotonic() == 3.0 and clock.now() == NOW + 3 * SECOND


async def test_signal_reach_and_next() -> None:
    signal = Signal()
    waiter = asyncio.create_task(signal.next(2))
    signal.fire()
    await settle()
    assert not waiter.done()
    signal.fire()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(signal.reach(2), 1)  # already there


async def test_duties_run_on_their_intervals_and_leader_duties_only_when_leading() -> None:
    clock = FakeClock(NOW)
    ran: list[tuple[str, int]] = []
    leading = False

    def duty(name: str, every: int, **kw: bool) -> Duty:
        async def run(now: int) -> None:
            ran.append((name, (now - NOW) // SECOND))

        return Duty(name, every * SECOND, run, **kw)

    async def is_leader() -> bool:
        return leading

    async def failing(now: int) -> None:
        raise RuntimeError("boom")

    maintenance = Maintenance(
        clock,
        [
            duty("often", 1),
            Duty("broken", SECOND, failing),
            duty("rarely", 3),
            duty("leader", 1, leader_only=True),
        ],
        is_leader,
        tick=SECOND,
    )
    task = asyncio.create_task(maintenance.run())
    for second in range(1, 5):
        if second == 3:
            leading = True
        await settle()
        clock.advance(SECOND)
        await asyncio.wait_for(maintenance.passes.reach(second), 1)
    task.cancel()
    assert ran == [
        ("often", 1),
        ("rarely", 1),
        ("often", 2),
        ("often", 3),
        ("leader", 3),
        ("often", 4),
        ("rarely", 4),
        ("leader", 4),
    ]
