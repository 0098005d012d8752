"""Overlap policies that act while an execution runs, at the next occurrence's time.

CANCEL_OTHER cancels the running execution (in-process and HTTP attempts of this process;
the job then runs the new occurrence at once). ALLOW_ALL starts the occurrence alongside the
running one, as a one-off child job labelled `jobwheel.parent=<id>` (a job row holds one
execution at a time; the idempotency key `<id>@<occurrence>` keeps replicas from starting it
twice). SKIP and BUFFER_ONE need nothing here: they apply when the execution ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from jobwheel.server import model
from jobwheel.server.clock import Clock
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.ids import new_id
from jobwheel.server.rules import triggers

log = logging.getLogger(__name__)
PARENT_LABEL = "jobwheel.parent"
ACTIVE = (model.OverlapPolicy.ALLOW_ALL, model.OverlapPolicy.CANCEL_OTHER)
# A wheel key: ("overlap", job id, execution)
Key = tuple[str, str, int]


class Overlaps:
    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        add_timer: Callable[[Key, model.Micros], None],
        cancel_attempt: Callable[[str], None],
    ) -> None:
        self.store = store
        self.clock = clock
        self.add_timer = add_timer
        self.cancel_attempt = cancel_attempt
        self._running: dict[str, model.Job] = {}
        self._spawns: set[asyncio.Task[None]] = set()

    def changed(self, job: model.Job) -> None:
        """Follows every job change: watches running executions of the policies above."""
        schedule = job.schedule
        if job.state is not model.JobState.RUNNING:
            self._running.pop(job.id, None)
            return
        watched = schedule is not None and schedule.recurring and schedule.overlap_policy in ACTIVE
        if watched and job.id not in self._running:
            self._running[job.id] = job
            self._arm(job, job.next_run_time)

    def _arm(self, job: model.Job, after: model.Micros | None) -> None:
        assert job.schedule is not None
        base = self.clock.now() if after is None else after
        fires = triggers.next_fires(job.schedule, base, 1)
        if fires:
            self.add_timer(("overlap", job.id, job.execution_count), fires[0].time)

    def fire(self, key: Key, due: model.Micros) -> None:
        _, job_id, execution = key
        job = self._running.get(job_id)
        if job is None or job.execution_count != execution or job.schedule is None:
            return  # that execution is over
        if job.schedule.overlap_policy is model.OverlapPolicy.CANCEL_OTHER:
            self.cancel_attempt(job_id)
            return
        task = asyncio.create_task(self._spawn(job, due))
        self._spawns.add(task)
        task.add_done_callback(self._spawns.discard)
        self._arm(job, due)

    async def _spawn(self, job: model.Job, occurrence: model.Micros) -> None:
        now = self.clock.now()
        child = model.NewJob(
            id=new_id(),
            queue=job.queue,
            task=job.task,
            payload=job.payload,
            labels={**job.labels, PARENT_LABEL: job.id},
            priority=job.priority,
            state=model.JobState.QUEUED,
            schedule=None,
            retry_policy=job.retry_policy,
            timeout=job.timeout,
            idempotency_key=f"{job.id}@{occurrence}",
            http=job.http,
            create_time=now,
            next_run_time=now,
        )
        try:
            await self.store.insert_jobs([child])
        except Exception:
            log.exception("could not start the overlapping occurrence of job %s", job.id)
