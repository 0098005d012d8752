"""Remote workers: leases taken over gRPC, long-polls woken by events, fenced reports.

A lease is the same transition as an in-process claim, and a report ends the attempt through
the same settlement, so retries, recurrence and the event log behave identically whoever runs
the job. The fencing token is the job's epoch, which every lease of it raises (attempt
numbers start again at each execution): a report about a lease the job no longer holds,
of this execution or an earlier one, changes nothing.

A lease that expires (the worker crashed, hung or lost the network) is found by the engine's
upkeep and settled as LOST: the attempt counts against `max_attempts`, so a job that kills
every worker that takes it still ends FAILED instead of cycling forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from jobwheel.server import failures, model
from jobwheel.server.batching import GroupCommit
from jobwheel.server.clock import Clock
from jobwheel.server.errors import DomainError, LeaseNotHeld, NotFound
from jobwheel.server.execution.roster import Roster
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.signals import Signal
from jobwheel.server.storage import Store
from jobwheel.server.storage.leases import Renewal

log = logging.getLogger(__name__)

# the LOST attempt's error of a lease whose LeaseJobs caller went away before the reply
CALLER_GONE = "not sent: the LeaseJobs caller went away"

# Jobs can be made due where no event reaches this process (clock-driven promotion happens
# in every replica, but a bug or a missed notification must not strand a long-poll).
RECHECK_EVERY = 1.0

Settle = Callable[[Sequence[states.Settlement]], Awaitable[list[bool]]]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    expire_time: model.Micros | None
    cancel_requested: bool = False
    cancel_reason: str = ""


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat of a batch: the lease of epoch `epoch` of `job_id`."""

    job_id: str
    epoch: int
    progress: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """One outcome of a batch: the attempt under epoch `epoch` of `job_id` ended with
    `result`, or (None) was released by the worker for `why`: the job runs again, the
    attempt is not charged (up to states.MAX_RELEASED_ATTEMPTS per execution)."""

    job_id: str
    epoch: int
    result: AttemptResult | None
    why: str = ""


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
        self._giving_back: set[asyncio.Task[None]] = set()
        # fired when a long-poll found nothing and waits (tests wait on it)
        self.polls_waiting = Signal()
        # notes who asks for what (ListWorkers, Job.waiting_reason)
        self.roster = roster

    @property
    def held(self) -> int:
        """Leases this replica granted that are still running."""
        return len(self._held)

    def holds(self, job_id: str) -> bool:
        """This replica granted the job's running lease (`on_event` follows its end)."""
        return job_id in self._held

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
                taking = asyncio.ensure_future(
                    self.store.lease(
                        worker_id,
                        queue_names=queues,
                        tasks=tasks,
                        skip_tasks=self.inprocess_tasks,
                        limit=limit,
                        now=now,
                        lease_until=now + lease,
                    )
                )
                try:
                    leased = await asyncio.shield(taking)
                except asyncio.CancelledError:
                    # the caller went away while its jobs were being leased: they go back
                    taking.add_done_callback(self._give_back_taken)
                    raise
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

    def give_back(self, leased: list[model.Job], why: str) -> None:
        """`release`, in the background: for leases whose caller went away."""
        task = asyncio.ensure_future(self.release(leased, why))
        self._giving_back.add(task)
        task.add_done_callback(self._given_back)

    def _give_back_taken(self, taking: asyncio.Future[list[model.Job]]) -> None:
        if not taking.cancelled() and taking.exception() is None and taking.result():
            self.give_back(taking.result(), CALLER_GONE)

    def _given_back(self, task: asyncio.Task[None]) -> None:
        self._giving_back.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("giving back leases failed", exc_info=task.exception())

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
        epoch: int,
        worker_id: str,
        lease: model.Micros | None,
        progress: dict[str, Any] | None,
    ) -> Heartbeat:
        [beat] = await self.heartbeat_many(worker_id, [Beat(job_id, epoch, progress)], lease)
        if isinstance(beat, DomainError):
            raise beat
        return beat

    async def heartbeat_many(
        self,
        worker_id: str,
        beats: Sequence[Beat],
        lease: model.Micros | None,
        sees: Callable[[str], bool] | None = None,
    ) -> list[Heartbeat | DomainError]:
        """Extends the leases of `beats` held by `worker_id` in one write; per item the new
        lease end (or the cancellation), else NotFound / LeaseNotHeld. `lease` None: each
        lease's original length. `sees` (a queue-scoped caller's queues) hides other jobs."""
        if self.roster is not None:
            self.roster.touched(worker_id)
        now = self.clock.now()
        renewals = []
        for b in beats:
            held = self._held.get(b.job_id)
            length = lease
            if length is None:  # the original lease's length, when this replica granted it
                mine = held is not None and held.job.epoch == b.epoch
                length = held.lease if mine and held is not None else model.DEFAULT_LEASE
            renewals.append(Renewal(b.job_id, b.epoch, worker_id, now + length, now, b.progress))
        renewed = await self._renew(renewals)
        out: list[Heartbeat | DomainError] = []
        for b, r in zip(beats, renewed, strict=True):
            job = r.job
            if job is None or (sees is not None and not sees(job.queue)):
                out.append(NotFound("job", b.job_id))
            elif r.applied:
                held = self._held.get(b.job_id)
                if held is not None and held.job.epoch == b.epoch:
                    held.job.progress = job.progress
                out.append(Heartbeat(job.lease_expire_time))
            elif (
                job.state is model.JobState.CANCELLED
                and job.epoch == b.epoch
                and job.worker_id == worker_id
            ):
                # The attempt ended by cancellation: its worker should stop, and need not report.
                out.append(Heartbeat(None, True, job.cancel_reason))
            else:
                out.append(LeaseNotHeld(job, b.epoch, worker_id))
        return out

    async def complete(self, job_id: str, epoch: int, worker_id: str, result: Any) -> model.Job:
        return await self._report(
            worker_id,
            Report(job_id, epoch, AttemptResult(AttemptOutcome.SUCCEEDED, result=result)),
        )

    async def fail(
        self,
        job_id: str,
        epoch: int,
        worker_id: str,
        error: str,
        *,
        retryable: bool,
        retry_after: model.Micros,
    ) -> model.Job:
        result = AttemptResult(
            AttemptOutcome.FAILED, error=error, retryable=retryable, retry_after=retry_after
        )
        return await self._report(worker_id, Report(job_id, epoch, result))

    async def _report(self, worker_id: str, report: Report) -> model.Job:
        [out] = await self.report_many(worker_id, [report])
        if isinstance(out, DomainError):
            raise out
        return out

    async def report_many(
        self,
        worker_id: str,
        reports: Sequence[Report],
        sees: Callable[[str], bool] | None = None,
    ) -> list[model.Job | DomainError]:
        """Ends the attempts of `reports` held by `worker_id`, all in one settlement write.
        Per item the job after it, else NotFound / LeaseNotHeld (that item changed nothing).
        `sees` (a queue-scoped caller's queues) hides other jobs."""
        if self.roster is not None:
            self.roster.touched(worker_id)
        jobs = await self._jobs_of(reports, worker_id)
        out: list[model.Job | DomainError] = []
        todo: list[tuple[int, states.Settlement]] = []
        now = self.clock.now()
        for i, r in enumerate(reports):
            job = jobs.get(r.job_id)
            if job is None or (sees is not None and not sees(job.queue)):
                out.append(NotFound("job", r.job_id))
                continue
            if (
                job.state is not model.JobState.RUNNING
                or job.epoch != r.epoch
                or job.worker_id != worker_id
            ):
                out.append(LeaseNotHeld(job, r.epoch, worker_id))
                continue
            out.append(job)  # replaced below by the job after its settlement
            if r.result is None:
                settlement = states.released(job, now, r.why)
            else:
                settlement = states.settle(job, r.result, now, self.clock.random())
            todo.append((i, settlement))
        applied = await self._settle([s for _, s in todo]) if todo else []
        lost: list[int] = []
        for (i, settlement), ok in zip(todo, applied, strict=True):
            if ok:
                self._held.pop(settlement.ended.job_id, None)
                failures.log_if_failed(settlement)
                out[i] = settlement.after
            else:
                lost.append(i)
        for i in lost:  # lost between the check and the write (cancelled, lease expired)
            current = await self.store.get_job(reports[i].job_id)
            out[i] = (
                NotFound("job", reports[i].job_id)
                if current is None
                else LeaseNotHeld(current, reports[i].epoch, worker_id)
            )
        return out

    async def _jobs_of(self, reports: Sequence[Report], worker_id: str) -> dict[str, model.Job]:
        """The jobs as leased here when `worker_id` holds the reported lease (no read), the
        others as stored (leased by another replica, or stale reports)."""
        found: dict[str, model.Job] = {}
        for r in reports:
            held = self._held.get(r.job_id)
            if held is not None and held.job.epoch == r.epoch and held.job.worker_id == worker_id:
                found[r.job_id] = held.job
        missing = [j for j in dict.fromkeys(r.job_id for r in reports) if j not in found]
        if missing:
            flt = model.JobFilter(ids=tuple(missing))
            for job in await self.store.list_jobs(flt, limit=len(missing)):
                found[job.id] = job
        return found
