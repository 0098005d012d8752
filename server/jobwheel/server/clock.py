"""Time and chance, injectable so tests control them instead of sleeping.

`now()` is wall time in µs (what jobs are scheduled by); `monotonic()` is seconds for
measuring intervals; `sleep()` waits in seconds; `random()` is uniform in [0, 1) (jitter).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random as _random
import time
from collections.abc import Awaitable
from typing import Protocol

from jobwheel.server.model import SECOND, Micros


class Clock(Protocol):
    def now(self) -> Micros: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> Awaitable[None]: ...

    def random(self) -> float: ...


class SystemClock:
    def now(self) -> Micros:
        return time.time_ns() // 1_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        # Until time.monotonic() has passed the end: uvloop's timers can end a wait up to a
        # millisecond early (see timer_delay), and the scheduler, waiting for the next due
        # job, would wake before it and wait again, and again, holding the loop.
        if not seconds > 0:  # 0, negative or NaN: a turn of the loop, as asyncio.sleep(0)
            await asyncio.sleep(0)
            return
        end = time.monotonic() + seconds
        left = seconds
        while left > 0:
            await asyncio.sleep(timer_delay(left))
            left = end - time.monotonic()

    def random(self) -> float:
        return _random.random()


SYSTEM_CLOCK = SystemClock()
# the longest wait handed to the loop at once (a longer one waits in turns): uvloop refuses
# timers past about 2**53 ms
_LONGEST_TIMER = 86_400.0


def timer_delay(seconds: float) -> float:
    """`seconds` for a loop timer (call_later, asyncio.sleep): rounded up to whole milliseconds,
    the resolution of the loop's clock, and at most a day. uvloop rounds a timer to the
    nearest millisecond of a clock that drops fractions of one, so a wait of less than a
    millisecond could end at once; rounded up, it ends at most that much early."""
    # the nanosecond taken off keeps 0.003 s (3.0000000000000004 ms) at 3 ms
    return math.ceil(min(seconds, _LONGEST_TIMER) * 1000 - 1e-6) / 1000


class FakeClock:
    """A clock that moves only when told (`advance`); sleepers wake when their time comes.
    `random()` returns `rand` (0.5: no jitter)."""

    def __init__(self, now: Micros, rand: float = 0.5) -> None:
        self._now = now
        self._start = now
        self.rand = rand
        self._sleepers: list[tuple[Micros, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> Micros:
        return self._now

    def monotonic(self) -> float:
        return (self._now - self._start) / SECOND

    def sleep(self, seconds: float) -> asyncio.Future[None]:
        """Counted from the call, not from the first await: a sleep decided before the clock
        moves on ends when it would have."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wake = self._now + max(0, round(seconds * SECOND))
        heapq.heappush(self._sleepers, (wake, next(self._order), future))
        return future

    def random(self) -> float:
        return self.rand

    @property
    def sleepers(self) -> int:
        """Sleeps not yet over."""
        return sum(not f.done() for _, _, f in self._sleepers)

    def advance(self, us: Micros) -> None:
        """Moves time on by `us` µs and wakes the sleeps that are over."""
        self._now += us
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
