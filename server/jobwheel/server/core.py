"""The operations behind the API, free of gRPC: what a servicer calls after validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobwheel.server import model
from jobwheel.server.api.errors import NotFound
from jobwheel.server.batching import GroupCommit
from jobwheel.server.clock import Clock
from jobwheel.server.storage import Store
from jobwheel.server.storage.history import ExecutionTotals


@dataclass(frozen=True)
class JobHistory:
    job: model.Job
    attempts: list[model.Attempt]
    totals: ExecutionTotals


EnqueueListener = Callable[[Sequence[model.Job]], None]


class Core:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._enqueue_listeners: list[EnqueueListener] = []
        # concurrent enqueues share one transaction: one fsync for many callers
        self._insert = GroupCommit(store.insert_jobs)

    def on_enqueued(self, listener: EnqueueListener) -> None:
        """Called with the jobs an enqueue created, after their commit."""
        self._enqueue_listeners.append(listener)

    async def enqueue(self, jobs: Sequence[model.NewJob]) -> list[tuple[model.Job, bool]]:
        results = await self._insert(jobs)
        created = [job for job, existed in results if not existed]
        if created:
            for listener in self._enqueue_listeners:
                listener(created)
        return results

    async def get(self, job_id: str) -> model.Job:
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound("job", job_id)
        return job

    async def list(
        self, flt: model.JobFilter, *, limit: int, after_seq: int | None, descending: bool
    ) -> list[model.Job]:
        return await self.store.list_jobs(
            flt, limit=limit, after_seq=after_seq, descending=descending
        )

    async def history(
        self, job_id: str, *, limit: int, after: tuple[int, int] | None
    ) -> JobHistory:
        job = await self.get(job_id)
        open_execution = (
            job.execution_count
            if job.state in (model.JobState.RUNNING, model.JobState.RETRYING)
            or (job.state is model.JobState.QUEUED and job.attempt > 0)
            else None
        )
        attempts = await self.store.list_attempts(job_id, limit=limit, after=after)
        totals = await self.store.execution_totals(job_id, open_execution)
        return JobHistory(job, attempts, totals)
