"""The scheduler's loop on a FakeClock against an oracle of due times: every due job and
timer is told by the time the clock reaches it, and never before."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server.clock import FakeClock
from jobwheel.server.model import SECOND, Micros
from jobwheel.server.scheduling.scheduler import Scheduler

T0 = 1_700_000_000_000_000
HORIZON = 10 * SECOND
RELOAD = 3 * SECOND


@dataclass
class StoredJobs:
    """The storage boundary: what `due_before` reads is a dict of waiting jobs."""

    due: dict[str, Micros] = field(default_factory=dict)

    async def due_before(self, until: Micros, limit: int) -> list[tuple[str, Micros]]:
        return sorted(((k, d) for k, d in self.due.items() if d < until), key=lambda x: x[1])


Add = tuple[str, str, int]  # ("add" | "timer" | "forget", key, offset µs from now)
Op = Add | tuple[str, int]  # ("advance", µs)

keys = st.sampled_from("abcdef")
offsets = st.integers(-SECOND, 12 * SECOND)
ops = st.lists(
    st.tuples(st.sampled_from(["add", "timer", "forget"]), keys, offsets)
    | st.tuples(st.just("advance"), st.integers(0, 2 * SECOND) | st.integers(0, 50)),
    max_size=40,
)
stored = st.dictionaries(keys.map(lambda k: "s" + k), st.integers(0, 15 * SECOND), max_size=4)


async def idle(scheduler: Scheduler, clock: FakeClock) -> None:
    """Lets the loop run until it sleeps again, for a time still ahead."""
    for _ in range(1000):
        await asyncio.sleep(0)
        until = scheduler.sleeping_until
        if until is not None and until > clock.now():
            return
    raise AssertionError("the scheduler never went back to sleep")


async def scenario(initial: dict[str, Micros], steps: list[Op]) -> None:
    clock = FakeClock(T0)
    store = StoredJobs({k: T0 + d for k, d in initial.items()})
    told: list[Micros] = []  # clock times of on_due calls
    timers: dict[tuple[str, str, int], Micros] = {}  # fired timer -> clock time when told
    scheduler = Scheduler(
        store,  # type: ignore[arg-type]
        clock,
        lambda: told.append(clock.now()),
        on_timer=lambda key, due: timers.__setitem__(key, clock.now()),
        horizon=HORIZON,
        reload_every=RELOAD,
    )
    jobs = dict(store.due)  # waiting jobs the dispatcher would find: the oracle
    armed: dict[tuple[str, str, int], Micros] = {}
    loop = asyncio.create_task(scheduler.run())
    try:
        await idle(scheduler, clock)
        for step in steps:
            if step[0] == "advance":
                clock.advance(step[1])
            elif step[0] == "add":
                _, key, offset = step
                jobs[key] = store.due[key] = clock.now() + offset
                scheduler.add(key, jobs[key])
            elif step[0] == "timer":
                _, key, offset = step
                armed[("t", key, 0)] = clock.now() + offset
                scheduler.add_timer(("t", key, 0), armed[("t", key, 0)])
            else:
                jobs.pop(step[1], None)
                store.due.pop(step[1], None)
                scheduler.forget(step[1])
            told_before = len(told)
            await idle(scheduler, clock)
            now = clock.now()
            due_now = {k for k, d in jobs.items() if d <= now}
            # a job came due since the last look: the dispatcher has been told, at a time
            # when it was due; nothing due: not told (never early)
            if len(told) > told_before:
                assert due_now, "told with nothing due"
            for key in due_now:  # told once; the dispatcher promotes it, the store forgets it
                assert told and told[-1] >= jobs[key]
                del jobs[key], store.due[key]
            for key, due in list(armed.items()):
                if due <= now:
                    assert timers.pop(key) >= due
                    del armed[key]
            assert not timers, "a timer fired early"
            assert scheduler.sleeping_until is not None and scheduler.sleeping_until > now
    finally:
        loop.cancel()


@settings(max_examples=120, deadline=None)
@given(stored, ops)
def test_scheduler_tells_each_due_time_once_it_passes(
    initial: dict[str, Micros], steps: list[Op]
) -> None:
    asyncio.run(scenario(initial, steps))
