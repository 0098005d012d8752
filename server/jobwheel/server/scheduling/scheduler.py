"""Keeps the timer wheel filled with near-future due times and wakes dispatch when one passes.

The database is the source of truth; the wheel is an index of what comes due within the
horizon. At start and every `reload_every` the jobs due within the horizon are (re)loaded;
an enqueue, retry or next occurrence inside the horizon goes straight in. The loop sleeps
until the earliest due time (no polling while idle) and is woken early when an earlier one
arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from jobwheel.server.clock import Clock
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.model import SECOND, Micros
from jobwheel.server.scheduling.timer_wheel import TimerWheel

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        on_due: Callable[[], None],
        *,
        on_timer: Callable[[tuple[str, str, int], Micros], None] | None = None,
        horizon: Micros = 60 * SECOND,
        reload_every: Micros = 15 * SECOND,
        load_limit: int = 200_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_due = on_due
        self.on_timer = on_timer
        self.horizon = horizon
        self.reload_every = reload_every
        self.load_limit = load_limit
        # job ids (something comes due) and other timers (tuples, told to `on_timer`)
        self.wheel: TimerWheel[str | tuple[str, str, int]] = TimerWheel(clock.now())
        self._wake = asyncio.Event()
        self._sleeping_until: Micros | None = None

    def add(self, job_id: str, due: Micros) -> None:
        """Indexes a due time; ignored beyond the horizon (the next reload picks it up)."""
        if due >= self.clock.now() + self.horizon:
            return
        self.wheel.insert(job_id, due)
        if self._sleeping_until is None or due < self._sleeping_until:
            self._wake.set()

    def add_timer(self, key: tuple[str, str, int], due: Micros) -> None:
        """A timer for `on_timer`, whatever the horizon."""
        self.wheel.insert(key, due)
        if self._sleeping_until is None or due < self._sleeping_until:
            self._wake.set()

    def forget(self, job_id: str) -> None:
        self.wheel.cancel(job_id)

    async def _reload(self, now: Micros) -> None:
        for job_id, due in await self.store.due_before(now + self.horizon, self.load_limit):
            self.wheel.insert(job_id, due)

    async def run(self) -> None:
        next_reload = self.clock.now()
        while True:
            now = self.clock.now()
            if now >= next_reload:
                try:
                    await self._reload(now)
                except Exception:
                    log.exception("loading due jobs failed; retrying at the next reload")
                next_reload = now + self.reload_every
            fired = self.wheel.advance(self.clock.now())
            if any(isinstance(key, str) for key, _ in fired):
                self.on_due()
            for key, when in fired:
                if not isinstance(key, str) and self.on_timer is not None:
                    self.on_timer(key, when)
            due = self.wheel.next_due()
            target = next_reload if due is None else min(due, next_reload)
            self._sleeping_until = target
            self._wake.clear()
            delay = max(0, target - self.clock.now()) / SECOND
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._sleeping_until = None
