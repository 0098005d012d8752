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
from jobwheel.server.storage.dialect import notify_settings_changed
from jobwheel.server.storage.filters import job_conditions
from jobwheel.server.storage.schema import attempts, event_head, jobs, queues
from sqlalchemy import func, select, update

MAX_DURATION_SAMPLE = 100_000
# GetJobStats lists this many queues at most, the largest (proto: queue_counts)
MAX_STATS_QUEUES = 1000


def _settings(row: object) -> QueueSettings:
    return QueueSettings(
        name=row.name,  # type: ignore[attr-defined]
        paused=bool(row.paused),  # type: ignore[attr-defined]
        max_concurrency=row.max_concurrency,  # type: ignore[attr-defined]
        max_dispatches_per_second=float(row.max_dispatches_per_second),  # type: ignore[attr-defined]
    )


class Queues(StoreBase):
    """Mixed into Store."""

    async def queue_settings(self, names: list[str] | None = None) -> dict[str, QueueSettings]:
        """Queues with settings (of `names` only, when given), by name."""
        stmt = select(queues)
        if names is not None:
            stmt = stmt.where(queues.c.name.in_(names))
        async with self._read() as conn:
            return {r.name: _settings(r) for r in await conn.execute(stmt)}

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
            await notify_settings_changed(conn)
        return _settings(row)

    async def queue_names(
        self, after: str | None, limit: int, only: frozenset[str] | None = None
    ) -> list[str]:
        """Up to `limit` names of known queues (with settings or jobs) after `after`, in
        order; `only` narrows them to these names."""
        named = select(queues.c.name).order_by(queues.c.name).limit(limit)
        used = select(jobs.c.queue).distinct().order_by(jobs.c.queue).limit(limit)
        if after is not None:
            named = named.where(queues.c.name > after)
            used = used.where(jobs.c.queue > after)
        if only is not None:
            named = named.where(queues.c.name.in_(sorted(only)))
            used = used.where(jobs.c.queue.in_(sorted(only)))
        async with self._read() as conn:
            names = set((await conn.execute(named)).scalars())
            names.update((await conn.execute(used)).scalars())
        return sorted(names)[:limit]

    async def queue_depths(self, names: list[str] | None = None) -> dict[str, dict[JobState, int]]:
        """Jobs per state of each queue (of `names` only, when given)."""
        stmt = select(jobs.c.queue, jobs.c.state, func.count()).group_by(jobs.c.queue, jobs.c.state)
        if names is not None:
            stmt = stmt.where(jobs.c.queue.in_(names))
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
        by_queue_stmt = (
            select(jobs.c.queue, func.count())
            .where(*conds)
            .group_by(jobs.c.queue)
            .order_by(func.count().desc(), jobs.c.queue)
            .limit(MAX_STATS_QUEUES + 1)
        )
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
        truncated = len(by_queue) > MAX_STATS_QUEUES
        if truncated:
            by_queue.pop(next(reversed(by_queue)))  # the smallest: rows come largest first
        return JobStats(by_state, by_queue, int(last_minute), durations, truncated)
