"""Load shapes shared by the adapters (no jobwheel import: they run in the peers' venv too)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor


async def async_count(call: Callable[[int], Awaitable[object]], n: int, callers: int) -> float:
    """`callers` tasks make n calls in all (call(i) for i < n); returns calls/s."""
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return n / (time.perf_counter() - started)


def thread_count(call: Callable[[int], object], n: int, callers: int) -> float:
    """As async_count, for blocking clients: `callers` threads."""
    lock = threading.Lock()
    counter = iter(range(n))

    def caller() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            call(i)

    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        for f in [pool.submit(caller) for _ in range(callers)]:
            f.result()
    return n / (time.perf_counter() - started)


class Tally:
    """Counts finished no-ops from any thread; `rate()` is first start -> n-th finish."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.first = 0.0
        self.last = 0.0
        self.count = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        if not self.first:
            with self._lock:
                self.first = self.first or time.time()

    def finish(self) -> None:
        with self._lock:
            self.count += 1
            if self.count == self.n:
                self.last = time.time()
                self.done.set()

    def wait(self, within: float) -> float:
        if not self.done.wait(within):
            raise TimeoutError(f"{self.count}/{self.n} finished after {within:.0f} s")
        return self.n / (self.last - self.first)


def due_times(fires: int, lead: float, span: float) -> list[float]:
    """Wall-clock due times (time.time()), spread uniformly over [now+lead, now+lead+span)."""
    begin = time.time() + lead
    return [begin + span * i / fires for i in range(fires)]


def lateness(late_seconds: list[float], expected: int) -> dict[str, float]:
    """p50/p99 in ms (nearest rank), how many fired early and how many fired at all."""
    late = sorted(late_seconds)
    if not late:
        return {"p50": float("nan"), "p99": float("nan"), "early": 0.0, "fired": 0.0}

    def pct(p: float) -> float:
        return late[min(len(late), max(1, round(p / 100 * len(late)))) - 1] * 1000

    return {
        "p50": pct(50),
        "p99": pct(99),
        "early": float(sum(x < 0 for x in late)),
        "fired": float(len(late)),
        "missed": float(expected - len(late)),
    }


class Firings:
    """Lateness of each fire, recorded from any thread; `wait()` until `n` fired or `within`."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.late: list[float] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    def fired(self, due: float) -> None:
        late = time.time() - due
        with self._lock:
            self.late.append(late)
            if len(self.late) >= self.n:
                self.done.set()

    def wait(self, within: float) -> dict[str, float]:
        self.done.wait(within)
        with self._lock:
            return lateness(list(self.late), self.n)
