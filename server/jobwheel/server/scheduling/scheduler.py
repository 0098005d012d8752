"""Keeps the timer wheel filled with near-future due times and wakes dispatch when one passes.

The database is the source of truth; the wheel is an index of what comes due within the
horizon. At start and every `reload_every` the jobs due within the horizon are (re)loaded;
an enqueue, retry or next occurrence inside the horizon goes straight in. The loop sleeps
(on the clock, so tests can drive it with a FakeClock) until the earliest due time, with no
polling while idle, and is woken early when an earlier one arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from jobwheel.server.clock import Clock
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.model import SECOND, Micros
from jobwheel.server.scheduling.timer_wheel import TimerWheel
from jobwheel.server.signals import Signal

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
        self._wake: asyncio.Future[None] | None = None
        self._sleeping_until: Micros | None = None
        # fired after each pass of the loop (timers fired, next wake-up chosen): tests wait on it
        self.passes = Signal()

    def add(self, job_id: str, due: Micros) -> None:
        """Indexes a due time; ignored beyond the horizon (the next reload picks it up)."""
        if due >= self.clock.now() + self.horizon:
            return
        self.wheel.insert(job_id, due)
        self._wake_if_before(due)

    def add_timer(self, key: tuple[str, str, int], due: Micros) -> None:
        """A timer for `on_timer`, whatever the horizon."""
        self.wheel.insert(key, due)
        self._wake_if_before(due)

    def _wake_if_before(self, due: Micros) -> None:
        woken = self._wake
        # while awake, the loop looks at the wheel before it sleeps again
        if woken is not None and due < (self._sleeping_until or due + 1):
            _resolve(woken)

    @property
    def sleeping_until(self) -> Micros | None:
        """When the loop wakes next (µs) while it sleeps; None while it works or is woken."""
        return None if self._wake is None or self._wake.done() else self._sleeping_until

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
            self.passes.fire()
            await self._sleep_until(target)

    async def _sleep_until(self, target: Micros) -> None:
        """Sleeps on the clock until `target` (µs), or until `add` brings an earlier time."""
        delay = (target - self.clock.now()) / SECOND
        if delay <= 0:
            return
        woken = self._wake = asyncio.get_running_loop().create_future()
        self._sleeping_until = target
        sleep = asyncio.ensure_future(self.clock.sleep(delay))
        sleep.add_done_callback(lambda _: _resolve(woken))
        try:
            await woken
        finally:
            self._sleeping_until = None
            self._wake = None
            sleep.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
