"""The engine: scheduler (timer wheel), dispatcher (in-process execution), and upkeep
(lease renewal, recovery of attempts whose executor vanished)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from jobwheel.server import failures, model
from jobwheel.server.clock import Clock
from jobwheel.server.config import Settings
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.execution.dispatcher import Dispatcher
from jobwheel.server.execution.event_delivery import (
    DELIVERY_TASK,
    EventDeliveries,
    EventRenderer,
)
from jobwheel.server.execution.inprocess import InProcessExecutor
from jobwheel.server.execution.overlap import Overlaps
from jobwheel.server.execution.webhook import WebhookExecutor, WebhookSettings
from jobwheel.server.handlers import Handler
from jobwheel.server.ids import new_id
from jobwheel.server.maintenance import Duty, Maintenance
from jobwheel.server.rules import states
from jobwheel.server.rules.states import WAITING
from jobwheel.server.scheduling.scheduler import Scheduler
from jobwheel.server.storage.leadership import Leadership

# event types that move a one-off job only between RUNNING and an end (or report progress)
_PASSING = frozenset(
    {
        model.EventType.STARTED,
        model.EventType.COMPLETED,
        model.EventType.FAILED,
        model.EventType.PROGRESS,
    }
)

log = logging.getLogger(__name__)
# Finished jobs past their retention are deleted this many per transaction.
PRUNE_BATCH = 1000
PRUNE_EVENTS_BATCH = 2000  # a batch deletes its rows from three indexes
PRUNE_EVERY = 60 * model.SECOND


class Engine:
    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        handlers: dict[str, Handler],
        render_event: EventRenderer,
        settings: Settings,
        *,
        lease: model.Micros = model.DEFAULT_LEASE,
        on_lease_expired: Callable[[int], None] | None = None,
        on_webhook_delivery: Callable[[str], None] | None = None,
        observe_settles: Callable[[int], None] | None = None,
    ) -> None:
        """The in-process side of the server: the wheel, the dispatcher and executors,
        maintenance, tuned by `settings` (whose fields hold the defaults); `lease` in µs.
        Told (for metrics): `on_lease_expired(n)` at each recovery that found n expired
        leases, `on_webhook_delivery(status_class)` per HTTP request ("2xx".."5xx", "error"),
        `observe_settles(n)` the size of each merged settle batch."""
        seconds = model.SECOND
        self.event_retention = int(settings.event_retention * seconds)
        self.retention = int(settings.retention * seconds)
        recover_every = int(settings.recover_interval * seconds)
        webhooks = WebhookSettings(
            secrets=settings.webhook_secrets, allow_networks=settings.webhook_allow
        )
        concurrency = settings.queue_concurrency
        threads = settings.threads
        misfire_grace = int(settings.misfire_grace * seconds)
        self.store = store
        self.clock = clock
        self.lease = lease
        self.recover_every = recover_every
        # A fresh identity per start: attempts held by an earlier process are recognisable.
        self.worker_id = f"{model.INPROCESS_PREFIX}{new_id()}"
        self.webhooks = WebhookExecutor(webhooks, on_delivery=on_webhook_delivery)
        self.deliveries = EventDeliveries(store, clock, self.webhooks, render_event)
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
            observe_settles=observe_settles,
        )
        self.scheduler = Scheduler(
            store, clock, on_due=self.dispatcher.wake, on_timer=self._on_timer
        )
        self.overlaps = Overlaps(store, clock, self.scheduler.add_timer, self.dispatcher.cancel)
        self._loops: list[asyncio.Task[None]] = []
        self._following: asyncio.Task[None] | None = None  # settings_changed's read
        self._follow_again = False
        self.leadership = Leadership(store)
        self.maintenance = Maintenance(
            clock, self._duties(), self.leadership.check, tick=recover_every
        )
        # told how many attempts' leases expired, at each recovery that found some (metrics)
        self.on_lease_expired = on_lease_expired

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
            # jobs only remote workers run, or that a fire here started in the promoting
            # transaction, need no dispatch cycle here
            runnable = job.http is not None or self.executor.handles(job.task)
            if runnable and not self.dispatcher.fired(job.id):
                self.dispatcher.wake({job.queue})
        elif state in WAITING and job.next_run_time is not None:
            self.scheduler.add(job.id, job.next_run_time)
        else:
            self.scheduler.forget(job.id)
            if state is model.JobState.CANCELLED:
                self.dispatcher.cancel(job.id)

    def needs_event(self, etype: model.EventType, job_id: str, recurring: bool) -> bool:
        """Whether `on_event` would act on an event of another process: not on a one-off
        job's start, end or progress, unless the job is in the wheel or held here, or event
        subscriptions look at every event (see EventBus.wants)."""
        return (
            etype not in _PASSING
            or recurring
            or bool(self.deliveries.subscriptions)
            or job_id in self.scheduler.wheel
            or self.dispatcher.holds(job_id)
        )

    async def start(self) -> None:
        # With one process per SQLite file, every in-process attempt still RUNNING belongs to
        # a process that is gone; on PostgreSQL other replicas may be alive: wait for leases.
        dead = model.INPROCESS_PREFIX if self.store.dialect.single_writer else None
        await self.recover(dead_worker_prefix=dead)
        self.dispatcher.set_queues(await self.store.queue_settings())
        await self.deliveries.refresh()
        self._loops = [
            asyncio.create_task(self.deliveries.run(), name="jobwheel-event-deliveries"),
            asyncio.create_task(self.scheduler.run(), name="jobwheel-scheduler"),
            asyncio.create_task(self.dispatcher.run(), name="jobwheel-dispatcher"),
            asyncio.create_task(self.maintenance.run(), name="jobwheel-upkeep"),
        ]

    async def recover(self, dead_worker_prefix: str | None = None) -> int:
        """Re-queues RUNNING jobs whose executor vanished, recording the lost attempt, and
        ends remote workers' attempts past their job's timeout (TIMED_OUT); how many."""
        now = self.clock.now()
        lost = await self.store.running_jobs_lost(now, dead_worker_prefix)
        lost = [j for j in lost if not self.dispatcher.holds(j.id)]
        timed_out = [j for j in lost if states.past_timeout(j, now)]
        if timed_out:
            lost = [j for j in lost if j not in timed_out]
        if timed_out:  # remote workers' attempts: the server ends them at the timeout
            ends = [states.timed_out(j, now, self.clock.random()) for j in timed_out]
            for settlement, applied in zip(ends, await self.store.settle(ends), strict=True):
                if applied:
                    failures.log_if_failed(settlement)
            self.dispatcher.wake({j.queue for j in timed_out})
        if lost:
            why = "executor lost (process ended or lease expired)"
            dead = dead_worker_prefix or "\0"
            await self.store.settle(
                [
                    states.lost(
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
        return len(lost) + len(timed_out)

    def _duties(self) -> list[Duty]:
        every = self.recover_every

        async def renew(now: model.Micros) -> None:
            await self.store.renew_leases(
                self.worker_id, self.dispatcher.held, now, now + self.lease
            )

        async def recover(now: model.Micros) -> None:
            await self.recover()

        async def follow_settings(now: model.Micros) -> None:
            await self.follow_settings()

        async def prune(now: model.Micros) -> None:
            # in batches, so the database is never held for long
            # until a batch finds nothing: another replica pruning beside this one (a leader
            # change mid-way) leaves batches short
            pruned = PRUNE_EVENTS_BATCH
            while pruned:
                pruned = await self.store.prune_events(
                    now - self.event_retention, limit=PRUNE_EVENTS_BATCH
                )
            if self.retention > 0:
                # in batches, so the database is never held for long
                pruned = PRUNE_BATCH
                while pruned == PRUNE_BATCH:
                    pruned = await self.store.prune_finished(
                        now - self.retention, PRUNE_BATCH, now=now
                    )

        renew_every = self.lease // 3
        return [
            Duty("lease renewal", renew_every, renew, first_after=renew_every),
            Duty("lost attempt recovery", every, recover, leader_only=True),
            Duty("settings refresh", every, follow_settings),
            Duty("pruning", PRUNE_EVERY, prune, leader_only=True),
        ]

    async def follow_settings(self) -> None:
        """Reads queue settings and event subscriptions again: other replicas may have changed
        them (periodically, and at once when one says so: `settings_changed`)."""
        self.dispatcher.set_queues(await self.store.queue_settings())
        await self.deliveries.refresh()

    def settings_changed(self) -> None:
        """Another replica changed queue settings or subscriptions: follow them now rather
        than at the next periodic refresh (one read at a time; a change told during it is
        read after it)."""
        if self._following is not None and not self._following.done():
            self._follow_again = True
            return

        async def follow() -> None:
            self._follow_again = True
            while self._follow_again:
                self._follow_again = False
                try:
                    await self.follow_settings()
                except Exception as exc:  # the periodic refresh catches up
                    log.warning("following changed settings failed: %s", exc)

        self._following = asyncio.create_task(follow(), name="jobwheel-follow-settings")

    async def stop(self, grace: float) -> None:
        for loop in self._loops:
            if loop.get_name() != "jobwheel-dispatcher":
                loop.cancel()
        await self.dispatcher.stop(grace)
        for loop in self._loops:
            loop.cancel()
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
        self.executor.close()
        await self.webhooks.aclose()
        await self.leadership.release()
