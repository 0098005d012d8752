"""Closed-loop load: C concurrent callers repeat one call for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Throughput:
    calls: int
    seconds: float
    errors: int

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


async def closed_loop(
    call: Callable[[], Awaitable[object]],
    *,
    callers: int,
    seconds: float,
    warmup: float = 0.5,
) -> Throughput:
    """Runs `callers` loops of `call()` for warmup + seconds; counts those in the window."""
    counting = False
    calls = errors = 0
    stop_at = time.perf_counter() + warmup + seconds

    async def caller() -> None:
        nonlocal calls, errors
        while time.perf_counter() < stop_at:
            try:
                await call()
            except Exception:
                if counting:
                    errors += 1
                continue
            if counting:
                calls += 1

    workers = [asyncio.create_task(caller()) for _ in range(callers)]
    await asyncio.sleep(warmup)
    counting, started = True, time.perf_counter()
    await asyncio.gather(*workers)
    return Throughput(calls, time.perf_counter() - started, errors)
