"""The operations behind the API, free of gRPC: what a servicer calls after validation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from jobwheel.server import model
from jobwheel.server.batching import GroupCommit
from jobwheel.server.clock import Clock
from jobwheel.server.errors import IllegalTransition, NotFound
from jobwheel.server.observability import tracing
from jobwheel.server.rules.states import Action
from jobwheel.server.storage import Store
from jobwheel.server.storage.history import ExecutionTotals
from jobwheel.server.storage.outage import is_conflict

CONFLICT_TRIES = 3  # runs of one batch of a bulk action that deadlocks
# Under load, event-loop turns an enqueue batch waits for more calls (see GroupCommit): a
# call takes grpc.aio several turns to reach its handler, and each write has a fixed cost.
# Measured with 64 single-enqueue callers on SQLite: batches of ~9 grew to ~14 and the
# server's CPU per call fell by 4-13%; 16 or 32 turns gained little more.
ENQUEUE_GATHER_TURNS = 8


@dataclass(frozen=True)
class JobHistory:
    job: model.Job
    attempts: list[model.Attempt]
    totals: ExecutionTotals
    more: bool = False  # attempts follow the page


class Core:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        on_subscriptions_change: Callable[[], Awaitable[None]] | None = None,
        on_queue_change: Callable[[model.QueueSettings], None] | None = None,
        observe_enqueues: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        # told when event subscriptions change (deliveries follow them at once)
        self.on_subscriptions_change = on_subscriptions_change
        # told of queue setting changes (the dispatcher applies them at once)
        self.on_queue_change = on_queue_change
        # concurrent enqueues share one transaction: one fsync for many callers (each
        # merged batch's size told to `observe_enqueues`)
        self._insert = GroupCommit(
            store.insert_jobs, observe=observe_enqueues, gather_turns=ENQUEUE_GATHER_TURNS
        )

    async def enqueue(self, jobs: Sequence[model.NewJob]) -> list[tuple[model.Job, bool]]:
        traceparent = tracing.current_traceparent()  # attempts join the enqueue's trace
        if traceparent:
            jobs = [replace(job, traceparent=traceparent) for job in jobs]
        return await self._insert(jobs)

    @property
    def enqueues_in_chunks(self) -> bool:
        """Whether a large batch should use enqueue_in_chunks now (Store.chunks_now)."""
        return self.store.chunks_now()

    async def enqueue_in_chunks(self, chunks: Iterator[Sequence[model.NewJob]]) -> list[model.Job]:
        """Jobs without idempotency keys created in one transaction as `chunks` yields them,
        each chunk's insert overlapping the making of the next (Store.insert_new_jobs_in_chunks;
        nothing is created if `chunks` raises). For large batches: no group commit with other
        calls."""
        traceparent = tracing.current_traceparent()  # attempts join the enqueue's trace
        if traceparent:
            chunks = ([replace(job, traceparent=traceparent) for job in c] for c in chunks)
        created = await self.store.insert_new_jobs_in_chunks(chunks)
        if self._insert.observe is not None:
            self._insert.observe(len(created))
        return created

    async def get(self, job_id: str) -> model.Job:
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound("job", job_id)
        return job

    async def list(
        self,
        flt: model.JobFilter,
        *,
        limit: int,
        after_seq: int | None,
        descending: bool,
        seq_window: tuple[int, int] | None = None,
    ) -> list[model.Job]:
        return await self.store.list_jobs(
            flt, limit=limit, after_seq=after_seq, descending=descending, seq_window=seq_window
        )

    async def list_page(
        self,
        flt: model.JobFilter,
        *,
        limit: int,
        max_bytes: int,
        after_seq: int | None,
        descending: bool,
    ) -> tuple[Iterator[model.Job], bool]:
        """A page of jobs (decoded as iterated) and whether more follow."""
        return await self.store.list_jobs_page(
            flt, limit=limit, max_bytes=max_bytes, after_seq=after_seq, descending=descending
        )

    async def history(
        self, job_id: str, *, limit: int, max_bytes: int, after: tuple[int, int] | None
    ) -> JobHistory:
        job = await self.get(job_id)
        open_execution = (
            job.execution_count
            if job.state in (model.JobState.RUNNING, model.JobState.RETRYING)
            or (job.state is model.JobState.QUEUED and job.attempt > 0)
            else None
        )
        attempts, more = await self.store.list_attempts_page(
            job_id, limit=limit, max_bytes=max_bytes, after=after
        )
        totals = await self.store.execution_totals(job_id, open_execution)
        return JobHistory(job, attempts, totals, more)

    async def act_on(self, job_id: str, action: Action) -> model.Job:
        """Applies `action` to one job, or says why it cannot."""
        changed = await self.store.apply_action(
            model.JobFilter(ids=(job_id,)), action, self.clock.now(), limit=1
        )
        if changed:
            return changed[0]
        raise IllegalTransition(await self.get(job_id), action.name, action.allowed)

    async def act_on_all(self, flt: model.JobFilter, action: Action, batch: int = 1000) -> int:
        """Applies `action` to every matching job, once each, one short transaction per
        batch (Store.apply_action_batch). A batch the database rolls back for a concurrent
        transaction (a deadlock) runs again, up to CONFLICT_TRIES times in all: earlier
        batches stay committed."""
        total = after = 0
        while True:
            for tries_left in range(CONFLICT_TRIES - 1, -1, -1):
                try:
                    changed, more_after = await self.store.apply_action_batch(
                        flt, action, self.clock.now(), limit=batch, after=after
                    )
                    break
                except Exception as exc:
                    if not tries_left or not is_conflict(exc):
                        raise
            total += len(changed)
            if more_after is None:
                return total
            after = more_after

    async def update_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        max_concurrency: int | None = None,
        max_dispatches_per_second: float | None = None,
    ) -> model.QueueSettings:
        settings = await self.store.update_queue(
            name,
            paused=paused,
            max_concurrency=max_concurrency,
            max_dispatches_per_second=max_dispatches_per_second,
        )
        if self.on_queue_change is not None:
            self.on_queue_change(settings)
        return settings

    async def subscriptions_changed(self) -> None:
        if self.on_subscriptions_change is not None:
            await self.on_subscriptions_change()
