"""Remote workers: leases taken over gRPC, long-polls woken by events, fenced reports.

A lease is the same transition as an in-process claim, and a report ends the attempt through
the same settlement, so retries, recurrence and the event log behave identically whoever runs
the job. The fencing token is the attempt number (the proto's `epoch`): a report for an
attempt the job no longer holds changes nothing.

A lease that expires (the worker crashed, hung or lost the network) is found by the engine's
upkeep and settled as LOST: the attempt counts against `max_attempts`, so a job that kills
every worker that takes it still ends FAILED instead of cycling forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from jobwheel.server import failures, model
from jobwheel.server.batching import GroupCommit
from jobwheel.server.clock import Clock
from jobwheel.server.errors import LeaseNotHeld, NotFound
from jobwheel.server.execution.roster import Roster
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.signals import Signal
from jobwheel.server.storage import Store
from jobwheel.server.storage.leases import Renewal

# Jobs can be made due where no event reaches this process (clock-driven promotion happens
# in every replica, but a bug or a missed notification must not strand a long-poll).
RECHECK_EVERY = 1.0

Settle = Callable[[Sequence[states.Settlement]], Awaitable[list[bool]]]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    expire_time: model.Micros | None
    cancel_requested: bool = False
    cancel_reason: str = ""


@dataclass(slots=True)
class _Held:
    job: model.Job  # as leased: what its settlement is computed from
    lease: model.Micros


class _Waiter:
    __slots__ = ("queues", "ready", "skip_tasks", "tasks")

    def __init__(
        self, queues: frozenset[str], tasks: frozenset[str], skip_tasks: frozenset[str]
    ) -> None:
        self.queues = queues
        self.tasks = tasks
        self.skip_tasks = skip_tasks
        self.ready = asyncio.Event()

    def wants(self, job: model.Job) -> bool:
        if self.queues and job.queue not in self.queues:
            return False
        if self.tasks:
            return job.task in self.tasks
        return job.task not in self.skip_tasks


class RemoteWorkers:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        inprocess_tasks: Collection[str] = (),
        settle: Settle | None = None,
        roster: Roster | None = None,
        observe_renewals: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        # Tasks the server runs itself: a worker gets them only by naming them.
        self.inprocess_tasks = frozenset(inprocess_tasks)
        self._settle: Settle = settle or GroupCommit(store.settle)
        self._renew = GroupCommit(store.renew, observe=observe_renewals)
        self._waiters: set[_Waiter] = set()
        # Leases granted here: reports need the job as leased, and this spares a read.
        self._held: dict[str, _Held] = {}
        self._closed = False
        # fired when a long-poll found nothing and waits (tests wait on it)
        self.polls_waiting = Signal()
        # notes who asks for what (ListWorkers, Job.waiting_reason)
        self.roster = roster

    @property
    def held(self) -> int:
        """Leases this replica granted that are still running."""
        return len(self._held)

    # -- waking long-polls ----------------------------------------------------------------

    def on_event(self, event: model.Event) -> None:
        """Told of every committed change (this replica's and, on PostgreSQL, the others')."""
        job = event.job
        held = self._held.get(job.id)
        if held is not None and (
            job.state is not model.JobState.RUNNING or job.attempt != held.job.attempt
        ):
            del self._held[job.id]  # settled, lost or cancelled: nothing to report any more
        if job.state is model.JobState.QUEUED and self._waiters:
            for waiter in self._waiters:
                if waiter.wants(job):
                    waiter.ready.set()

    def close(self) -> None:
        """Ends every long-poll now (with no jobs) so that shutdown need not wait for them."""
        self._closed = True
        for waiter in self._waiters:
            waiter.ready.set()

    # -- the four calls -----------------------------------------------------------------------

    async def lease(
        self,
        worker_id: str,
        *,
        queues: Collection[str],
        tasks: Collection[str],
        limit: int,
        lease: model.Micros,
        wait: float,
    ) -> list[model.Job]:
        """Up to `limit` jobs, as soon as one is available or after `wait` seconds."""
        if self.roster is not None:
            self.roster.leased(worker_id, queues, tasks)
        waiter = _Waiter(frozenset(queues), frozenset(tasks), self.inprocess_tasks)
        deadline = self.clock.monotonic() + wait
        # Registered before the first look: a job queued in between still wakes us.
        self._waiters.add(waiter)
        try:
            while True:
                waiter.ready.clear()
                now = self.clock.now()
                leased = await self.store.lease(
                    worker_id,
                    queue_names=queues,
                    tasks=tasks,
                    skip_tasks=self.inprocess_tasks,
                    limit=limit,
                    now=now,
                    lease_until=now + lease,
                )
                left = deadline - self.clock.monotonic()
                if leased or left <= 0 or self._closed:
                    break
                self.polls_waiting.fire()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.ready.wait(), min(left, RECHECK_EVERY))
        finally:
            self._waiters.discard(waiter)
        for job in leased:
            self._held[job.id] = _Held(job, lease)
        return leased

    async def release(self, leased: list[model.Job], why: str) -> None:
        """Gives back leases that were never sent: the jobs are QUEUED again at once, and
        the attempt is recorded as LOST without counting against max_attempts."""
        now = self.clock.now()
        await self._settle([states.lost(job, now, why, counts=False) for job in leased])
        for job in leased:
            self._held.pop(job.id, None)

    async def heartbeat(
        self,
        job_id: str,
        attempt: int,
        worker_id: str,
        lease: model.Micros | None,
        progress: dict[str, Any] | None,
    ) -> Heartbeat:
        if self.roster is not None:
            self.roster.touched(worker_id)
        held = self._held.get(job_id)
        if lease is None:
            # the original lease's length, when this replica granted it
            lease = (
                held.lease
                if held is not None and held.job.attempt == attempt
                else model.DEFAULT_LEASE
            )
        now = self.clock.now()
        renewal = Renewal(job_id, attempt, worker_id, now + lease, now, progress)
        [renewed] = await self._renew([renewal])
        job = renewed.job
        if job is None:
            raise NotFound("job", job_id)
        if renewed.applied:
            if held is not None and held.job.attempt == attempt:
                held.job.progress = job.progress
            return Heartbeat(job.lease_expire_time)
        if job.state is model.JobState.CANCELLED and job.attempt == attempt:
            # The attempt ended by cancellation: the worker should stop, and need not report.
            return Heartbeat(None, cancel_requested=True, cancel_reason=job.cancel_reason)
        raise LeaseNotHeld(job, attempt, worker_id)

    async def complete(self, job_id: str, attempt: int, worker_id: str, result: Any) -> model.Job:
        return await self._report(
            job_id, attempt, worker_id, AttemptResult(AttemptOutcome.SUCCEEDED, result=result)
        )

    async def fail(
        self,
        job_id: str,
        attempt: int,
        worker_id: str,
        error: str,
        *,
        retryable: bool,
        retry_after: model.Micros,
    ) -> model.Job:
        return await self._report(
            job_id,
            attempt,
            worker_id,
            AttemptResult(
                AttemptOutcome.FAILED, error=error, retryable=retryable, retry_after=retry_after
            ),
        )

    async def _report(
        self, job_id: str, attempt: int, worker_id: str, result: AttemptResult
    ) -> model.Job:
        if self.roster is not None:
            self.roster.touched(worker_id)
        job = await self._holding(job_id, attempt, worker_id)
        settlement = states.settle(job, result, self.clock.now(), self.clock.random())
        [applied] = await self._settle([settlement])
        if not applied:
            # Lost between the check and the write (cancelled, or the lease expired).
            current = await self.store.get_job(job_id)
            if current is None:
                raise NotFound("job", job_id)
            raise LeaseNotHeld(current, attempt, worker_id)
        self._held.pop(job_id, None)
        failures.log_if_failed(settlement)
        return settlement.after

    async def _holding(self, job_id: str, attempt: int, worker_id: str) -> model.Job:
        """The job as leased, if `worker_id` holds attempt `attempt` of it; else why not."""
        held = self._held.get(job_id)
        if held is not None and held.job.attempt == attempt and held.job.worker_id == worker_id:
            return held.job
        job = await self.store.get_job(job_id)  # leased by another replica, or stale
        if job is None:
            raise NotFound("job", job_id)
        if (
            job.state is not model.JobState.RUNNING
            or job.attempt != attempt
            or job.worker_id != worker_id
        ):
            raise LeaseNotHeld(job, attempt, worker_id)
        return job
