"""Queue settings, queue depths and job statistics."""

from __future__ import annotations

from jobwheel.server.model import (
    SECOND,
    AttemptOutcome,
    JobFilter,
    JobState,
    JobStats,
    Micros,
    QueueSettings,
)
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.filters import job_conditions
from jobwheel.server.storage.schema import attempts, event_head, jobs, queues
from sqlalchemy import func, select, update

MAX_DURATION_SAMPLE = 100_000


def _settings(row: object) -> QueueSettings:
    return QueueSettings(
        name=row.name,  # type: ignore[attr-defined]
        paused=bool(row.paused),  # type: ignore[attr-defined]
        max_concurrency=row.max_concurrency,  # type: ignore[attr-defined]
        max_dispatches_per_second=float(row.max_dispatches_per_second),  # type: ignore[attr-defined]
    )


class Queues(StoreBase):
    """Mixed into Store."""

    async def queue_settings(self) -> dict[str, QueueSettings]:
        async with self._read() as conn:
            return {r.name: _settings(r) for r in await conn.execute(select(queues))}

    async def update_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        max_concurrency: int | None = None,
        max_dispatches_per_second: float | None = None,
    ) -> QueueSettings:
        values: dict[str, object] = {}
        if paused is not None:
            values["paused"] = paused
        if max_concurrency is not None:
            values["max_concurrency"] = max_concurrency
        if max_dispatches_per_second is not None:
            values["max_dispatches_per_second"] = max_dispatches_per_second
        async with self._write() as conn:
            insert = self.dialect.insert_ignore(queues, "name").values(name=name)
            await conn.execute(insert)
            if values:
                await conn.execute(update(queues).where(queues.c.name == name).values(values))
            row = (await conn.execute(select(queues).where(queues.c.name == name))).one()
        return _settings(row)

    async def queue_depths(self) -> dict[str, dict[JobState, int]]:
        stmt = select(jobs.c.queue, jobs.c.state, func.count()).group_by(jobs.c.queue, jobs.c.state)
        depths: dict[str, dict[JobState, int]] = {}
        async with self._read() as conn:
            for queue, state, count in await conn.execute(stmt):
                depths.setdefault(queue, {})[JobState(state)] = count
        return depths

    async def active_counts(self) -> tuple[int, dict[tuple[JobState, str, str], int]]:
        """Jobs in each non-terminal state by queue and task, and the event revision they are
        as of (one transaction): the starting point the metrics keep current from events."""
        stmt = (
            select(jobs.c.state, jobs.c.queue, jobs.c.task, func.count())
            .where(jobs.c.state.in_([s.value for s in JobState if not s.terminal]))
            .group_by(jobs.c.state, jobs.c.queue, jobs.c.task)
        )
        head = select(event_head.c.revision).where(event_head.c.id == 1)
        async with self._read() as conn:
            revision = int((await conn.execute(head)).scalar_one())
            rows = await conn.execute(stmt)
            counts = {(JobState(s), q, t): int(n) for s, q, t, n in rows}
        return revision, counts

    async def job_stats(self, flt: JobFilter, now: Micros) -> JobStats:
        conds = job_conditions(self.dialect, flt)
        by_state_stmt = select(jobs.c.state, func.count()).where(*conds).group_by(jobs.c.state)
        by_queue_stmt = select(jobs.c.queue, func.count()).where(*conds).group_by(jobs.c.queue)
        recent = (
            select((attempts.c.end_time - attempts.c.start_time).label("duration"))
            .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
            .where(
                *conds,
                attempts.c.outcome == AttemptOutcome.SUCCEEDED.value,
                attempts.c.end_time >= now - 3600 * SECOND,
            )
            .order_by(attempts.c.end_time.desc())
            .limit(MAX_DURATION_SAMPLE)
        )
        minute = (
            select(func.count())
            .select_from(attempts.join(jobs, jobs.c.id == attempts.c.job_id))
            .where(
                *conds,
                attempts.c.outcome == AttemptOutcome.SUCCEEDED.value,
                attempts.c.end_time >= now - 60 * SECOND,
            )
        )
        async with self._read() as conn:
            by_state = {JobState(s): n for s, n in await conn.execute(by_state_stmt)}
            by_queue = {q: n for q, n in await conn.execute(by_queue_stmt)}
            durations = [r.duration for r in await conn.execute(recent)]
            last_minute = (await conn.execute(minute)).scalar_one()
        return JobStats(by_state, by_queue, int(last_minute), durations)
