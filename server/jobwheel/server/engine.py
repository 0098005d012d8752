"""The engine: scheduler (timer wheel), dispatcher (in-process execution), and upkeep
(lease renewal, recovery of attempts whose executor vanished)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from jobwheel.server import model
from jobwheel.server.clock import Clock
from jobwheel.server.execution import outcomes
from jobwheel.server.execution.dispatcher import Dispatcher
from jobwheel.server.execution.event_delivery import DELIVERY_TASK, EventDeliveries
from jobwheel.server.execution.inprocess import InProcessExecutor
from jobwheel.server.execution.overlap import Overlaps
from jobwheel.server.execution.webhook import WebhookExecutor, WebhookSettings
from jobwheel.server.handlers import Handler
from jobwheel.server.ids import new_id
from jobwheel.server.scheduling.scheduler import Scheduler
from jobwheel.server.storage import DatabaseUnavailable, Store
from jobwheel.server.storage.leadership import Leadership

log = logging.getLogger(__name__)
INPROCESS_PREFIX = "inprocess@"
_WAITING = (model.JobState.SCHEDULED, model.JobState.RETRYING)


class Engine:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        handlers: dict[str, Handler],
        *,
        concurrency: int = 256,
        lease: model.Micros = 30 * model.SECOND,
        recover_every: model.Micros = 5 * model.SECOND,
        event_retention: model.Micros = 86_400 * model.SECOND,
        retention: model.Micros = 7 * 86_400 * model.SECOND,
        misfire_grace: model.Micros = 5 * model.SECOND,
        webhooks: WebhookSettings | None = None,
        threads: int = 32,
    ) -> None:
        self.event_retention = event_retention
        self.retention = retention
        self.store = store
        self.clock = clock
        self.lease = lease
        self.recover_every = recover_every
        # A fresh identity per start: attempts held by an earlier process are recognisable.
        self.worker_id = f"{INPROCESS_PREFIX}{new_id()}"
        self.webhooks = WebhookExecutor(webhooks or WebhookSettings())
        self.deliveries = EventDeliveries(store, clock, self.webhooks)
        self.executor = InProcessExecutor(
            {**handlers, DELIVERY_TASK: self.deliveries.deliver}, max_threads=threads
        )
        self.dispatcher = Dispatcher(
            store,
            clock,
            self.executor,
            self.worker_id,
            self.webhooks,
            concurrency=concurrency,
            lease=lease,
            misfire_grace=misfire_grace,
        )
        self.scheduler = Scheduler(
            store, clock, on_due=self.dispatcher.wake, on_timer=self._on_timer
        )
        self.overlaps = Overlaps(store, clock, self.scheduler.add_timer, self.dispatcher.cancel)
        self._loops: list[asyncio.Task[None]] = []
        self.leadership = Leadership(store)
        # told how many attempts' leases expired, at each recovery that found some (metrics)
        self.on_lease_expired: Callable[[int], None] | None = None

    def _on_timer(self, key: tuple[str, str, int], due: model.Micros) -> None:
        if key[0] == "overlap":
            self.overlaps.fire(key, due)

    def on_event(self, event: model.Event) -> None:
        """Reacts to every committed change, whichever process or RPC made it."""
        job = event.job
        state = job.state
        self.overlaps.changed(job)
        self.deliveries.wake(event)
        if state is model.JobState.QUEUED:
            # jobs only remote workers run need no dispatch cycle here
            if job.http is not None or self.executor.handles(job.task):
                self.dispatcher.wake({job.queue})
        elif state in _WAITING and job.next_run_time is not None:
            self.scheduler.add(job.id, job.next_run_time)
        else:
            self.scheduler.forget(job.id)
            if state is model.JobState.CANCELLED:
                self.dispatcher.cancel(job.id)

    async def start(self) -> None:
        # With one process per SQLite file, every in-process attempt still RUNNING belongs to
        # a process that is gone; on PostgreSQL other replicas may be alive: wait for leases.
        dead = INPROCESS_PREFIX if self.store.dialect.single_writer else None
        await self.recover(dead_worker_prefix=dead)
        self.dispatcher.set_queues(await self.store.queue_settings())
        await self.deliveries.refresh()
        self._loops = [
            asyncio.create_task(self.deliveries.run(), name="jobwheel-event-deliveries"),
            asyncio.create_task(self.scheduler.run(), name="jobwheel-scheduler"),
            asyncio.create_task(self.dispatcher.run(), name="jobwheel-dispatcher"),
            asyncio.create_task(self._upkeep(), name="jobwheel-upkeep"),
        ]

    async def recover(self, dead_worker_prefix: str | None = None) -> int:
        """Re-queues RUNNING jobs whose executor vanished, recording the lost attempt."""
        now = self.clock.now()
        lost = await self.store.running_jobs_lost(now, dead_worker_prefix)
        lost = [j for j in lost if not self.dispatcher.holds(j.id)]
        if lost:
            why = "executor lost (process ended or lease expired)"
            dead = dead_worker_prefix or "\0"
            await self.store.settle(
                [
                    outcomes.lost(
                        j,
                        now,
                        why,
                        # a live executor renewing its lease in the meantime keeps its job
                        lease_expired_before=None if j.worker_id.startswith(dead) else now,
                    )
                    for j in lost
                ]
            )
            log.warning("re-queued %d jobs whose attempt was lost", len(lost))
            expired = sum(1 for j in lost if not j.worker_id.startswith(dead))
            if expired and self.on_lease_expired is not None:
                self.on_lease_expired(expired)
            self.dispatcher.wake({j.queue for j in lost})
        return len(lost)

    async def _upkeep(self) -> None:
        renew_every = self.lease // 3
        next_renew = self.clock.now() + renew_every
        next_prune = self.clock.now()
        while True:
            await asyncio.sleep(self.recover_every / model.SECOND)
            now = self.clock.now()
            try:
                if now >= next_renew:
                    held = self.dispatcher.held
                    await self.store.renew_leases(self.worker_id, held, now, now + self.lease)
                    next_renew = now + renew_every
                if await self.leadership.check():  # one replica does the upkeep of all
                    await self.recover()
                # other replicas may have changed queue settings or subscriptions
                self.dispatcher.set_queues(await self.store.queue_settings())
                await self.deliveries.refresh()
                if now >= next_prune and self.leadership.leading:
                    await self.store.prune_events(now - self.event_retention)
                    if self.retention > 0:
                        # in batches, so the database is never held for long
                        pruned = 1000
                        while pruned == 1000:
                            pruned = await self.store.prune_finished(now - self.retention)
                    next_prune = now + 60 * model.SECOND
            except DatabaseUnavailable as exc:
                log.warning("upkeep paused: %s", exc)
            except Exception:
                log.exception("upkeep failed; retrying")

    async def stop(self, grace: float) -> None:
        for loop in self._loops:
            if loop.get_name() != "jobwheel-dispatcher":
                loop.cancel()
        await self.dispatcher.stop(grace)
        for loop in self._loops:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        self.executor.close()
        await self.webhooks.aclose()
        await self.leadership.release()
