"""Remote workers' leases: take QUEUED jobs, extend the lease while working.

A lease is the engine's claim (Transitions._start_attempts) with other filters; a worker's
report at the end of the attempt goes through `settle` like an in-process ending. Renewals are
fenced like settlements: only the worker holding the job's current attempt extends it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from jobwheel.server.model import EventType, Job, JobState, Micros
from jobwheel.server.storage.convert import job_from_row, job_result_doc
from jobwheel.server.storage.events import Change, append_events
from jobwheel.server.storage.schema import jobs, queues, state_is
from jobwheel.server.storage.transitions import Transitions
from sqlalchemy import ColumnElement, Select, select, text, union_all, update

# A lease from several queues (or all) on SQLite: the best `limit` jobs of each queue through
# the dispatch index (queue, state, priority, seq), then the best of those. One query ordering
# every QUEUED job instead reads and sorts the whole backlog on each lease (19 ms for 20,000).
_MAX_QUEUE_PROBES = 64
# Each probe repeats the task filter: past this many bound values in all (1000 queues of
# 1000 tasks would be a million), one query over the named queues instead.
_MAX_PROBE_VALUES = 4096
_QUEUE_SKIP_SCAN = text(
    "WITH RECURSIVE q(name) AS (SELECT MIN(queue) FROM jobs UNION ALL "
    "SELECT (SELECT MIN(queue) FROM jobs WHERE queue > q.name) FROM q WHERE q.name IS NOT NULL) "
    "SELECT name FROM q WHERE name IS NOT NULL LIMIT :n"
)


def _best_of_each(
    where: list[ColumnElement[bool]], queue_names: list[str], limit: int
) -> Select[tuple[int]]:
    """The seqs of the best `limit` jobs matching `where` in each of `queue_names`."""
    order = (jobs.c.priority.desc(), jobs.c.seq)
    members = [
        select(jobs.c.seq).where(*where, jobs.c.queue == q).order_by(*order).limit(limit).subquery()
        for q in queue_names
    ]
    return select(union_all(*(select(m.c.seq) for m in members)).subquery().c.seq)


@dataclass(frozen=True, slots=True)
class Renewal:
    """A heartbeat: push the lease of (job, attempt) held by `worker_id` to `until`."""

    job_id: str
    attempt: int
    worker_id: str
    until: Micros
    now: Micros
    progress: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Renewed:
    applied: bool
    # After the renewal if applied; else the job as it is (None: no such job).
    job: Job | None


class Leases(Transitions):
    """A lease is Transitions' claim (`_start_attempts`) with a worker's filters."""

    async def lease(
        self,
        worker_id: str,
        *,
        queue_names: Collection[str],
        tasks: Collection[str],
        skip_tasks: Collection[str],
        limit: int,
        now: Micros,
        lease_until: Micros,
    ) -> list[Job]:
        """Up to `limit` QUEUED jobs of `queue_names` and `tasks` (empty: any) in queues not
        paused, best priority first, become RUNNING for `worker_id`. With no `tasks`, jobs of
        `skip_tasks` (those the server runs in-process) are left alone."""
        if limit <= 0:
            return []
        where = [
            state_is(JobState.QUEUED),
            jobs.c.http.is_(None),  # the server itself sends HTTP jobs
            # a paused queue starts nothing, whoever asks
            jobs.c.queue.not_in(select(queues.c.name).where(queues.c.paused)),
        ]
        if len(tasks) == 1:
            where.append(jobs.c.task == next(iter(tasks)))
        elif tasks:
            where.append(jobs.c.task.in_(list(tasks)))
        elif skip_tasks:
            where.append(jobs.c.task.not_in(list(skip_tasks)))
        # A single value as `=`: the planner then walks the dispatch index in order.
        if len(queue_names) == 1:
            where.append(jobs.c.queue == next(iter(queue_names)))
        elif self.dialect.name == "sqlite":
            named = list(queue_names) or await self._queue_names()
            if named == []:
                return []  # no job at all
            per_probe = max(len(tasks), len(skip_tasks), 1)
            if named is not None and len(named) * per_probe <= _MAX_PROBE_VALUES:
                where.append(jobs.c.seq.in_(_best_of_each(where, named, limit)))
            elif queue_names:
                where.append(jobs.c.queue.in_(list(queue_names)))
        elif queue_names:
            where.append(jobs.c.queue.in_(list(queue_names)))
        return await self._start_attempts(where, limit, worker_id, now, lease_until)

    async def _queue_names(self) -> list[str] | None:
        """Every queue a job names (SQLite: a skip scan of the queue index, one probe per
        queue); None when there are more than _MAX_QUEUE_PROBES."""
        async with self._read() as conn:
            rows = (await conn.execute(_QUEUE_SKIP_SCAN, {"n": _MAX_QUEUE_PROBES + 1})).all()
        return None if len(rows) > _MAX_QUEUE_PROBES else [r[0] for r in rows]

    async def renew(self, renewals: Sequence[Renewal]) -> list[Renewed]:
        """Applies heartbeats in one transaction (shaped for GroupCommit)."""
        if not renewals:
            return []
        out: list[Renewed] = []
        changes: list[Change] = []
        async with self._write() as conn:
            for r in renewals:
                values: dict[str, Any] = {"lease_expire_time": r.until}
                if r.progress is not None:
                    values.update(progress=job_result_doc(r.progress), update_time=r.now)
                stmt = (
                    update(jobs)
                    .where(
                        jobs.c.id == r.job_id,
                        jobs.c.state == JobState.RUNNING.value,
                        jobs.c.attempt == r.attempt,
                        jobs.c.worker_id == r.worker_id,
                    )
                    .values(values)
                    .returning(*jobs.c)
                )
                row = (await conn.execute(stmt)).mappings().first()
                if row is None:
                    current = (
                        (await conn.execute(select(jobs).where(jobs.c.id == r.job_id)))
                        .mappings()
                        .first()
                    )
                    out.append(Renewed(False, None if current is None else job_from_row(current)))
                    continue
                job = job_from_row(row)
                out.append(Renewed(True, job))
                if r.progress is not None:
                    changes.append((EventType.PROGRESS, job))
            committed = await append_events(conn, changes, renewals[0].now)
        self._emit(committed)
        return out
