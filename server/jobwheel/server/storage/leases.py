"""Remote workers' leases: take QUEUED jobs, extend the lease while working.

A lease is the engine's claim (Transitions._start_attempts) with other filters; a worker's
report at the end of the attempt goes through `settle` like an in-process ending. Renewals are
fenced by the lease's epoch: only the worker holding the job's current lease extends it.
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
from sqlalchemy import ColumnElement, Select, bindparam, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

# A lease from several queues (or all) on SQLite: the best `limit` jobs of each queue through
# the dispatch index (queue, state, priority, seq), then the best of those. One query ordering
# every QUEUED job instead reads and sorts the whole backlog on each lease (19 ms for 20,000).
_MAX_QUEUE_PROBES = 64
# Each probe repeats the task filter: past this many bound values in all (1000 queues of
# 1000 tasks would be a million), one query over the named queues instead.
_MAX_PROBE_VALUES = 4096
# SQLite refuses a compound SELECT of more terms (SQLITE_MAX_COMPOUND_SELECT): a probe each
_MAX_PROBES = 500
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
    """A heartbeat: push the lease of (job, epoch) held by `worker_id` to `until`."""

    job_id: str
    epoch: int
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
            if (
                named is not None
                and len(named) <= _MAX_PROBES
                and len(named) * per_probe <= _MAX_PROBE_VALUES
            ):
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
        """Applies heartbeats in one transaction (shaped for GroupCommit): one UPDATE run for
        the first heartbeat of each job and one read back, then any later heartbeat of a job
        already named (an expired lease's old and new holders, say) one UPDATE each, in
        order, so that each answers with the lease it set."""
        if not renewals:
            return []
        named: set[str] = set()
        firsts: list[int] = []
        repeats: list[int] = []
        for i, r in enumerate(renewals):
            (repeats if r.job_id in named else firsts).append(i)
            named.add(r.job_id)
        out: list[Renewed] = [_NOT_RENEWED] * len(renewals)
        async with self._write() as conn:
            # the UPDATEs below run one statement per shape: a job with progress locked after
            # one without could deadlock with a CancelJobs on another replica
            await self.dialect.lock_jobs(conn, [r.job_id for r in renewals])
            distinct = await _renew_distinct(conn, [renewals[i] for i in firsts])
            for i, done in zip(firsts, distinct, strict=True):
                out[i] = done
            for i in repeats:
                out[i] = await _renew_one(conn, renewals[i])
            changes: list[Change] = [
                (EventType.PROGRESS, done.job)
                for r, done in zip(renewals, out, strict=True)
                if r.progress is not None and done.applied and done.job is not None
            ]
            committed = await append_events(conn, changes, renewals[0].now)
        self._emit(committed)
        return out


# Fenced by the epoch: only the worker holding the job's current lease extends it.
_HELD = (
    jobs.c.id == bindparam("r_id"),
    jobs.c.state == JobState.RUNNING.value,
    jobs.c.epoch == bindparam("r_epoch"),
    jobs.c.worker_id == bindparam("r_worker"),
)
_EXTEND = update(jobs).where(*_HELD).values(lease_expire_time=bindparam("r_until"))
_EXTEND_WITH_PROGRESS = _EXTEND.values(
    progress=bindparam("r_progress"), update_time=bindparam("r_now")
)
_NOT_RENEWED = Renewed(False, None)
# ids read back at once: well under every backend's bound-parameter limit
_READ_BACK = 500


def _params(r: Renewal) -> dict[str, Any]:
    params: dict[str, Any] = {
        "r_id": r.job_id,
        "r_epoch": r.epoch,
        "r_worker": r.worker_id,
        "r_until": r.until,
    }
    if r.progress is not None:
        params.update(r_progress=job_result_doc(r.progress), r_now=r.now)
    return params


async def _renew_distinct(conn: AsyncConnection, renewals: Sequence[Renewal]) -> list[Renewed]:
    """Renewals of distinct jobs: each UPDATE (one executemany per shape) only extends a lease
    and leaves state, epoch and worker as they were, so a job read back afterwards still
    held by the renewal's epoch and worker is one the UPDATE applied to."""
    for stmt, progress in ((_EXTEND, False), (_EXTEND_WITH_PROGRESS, True)):
        batch = [_params(r) for r in renewals if (r.progress is not None) is progress]
        if batch:
            await conn.execute(stmt, batch)
    ids = [r.job_id for r in renewals]
    now: dict[str, Job] = {}
    for start in range(0, len(ids), _READ_BACK):
        part = ids[start : start + _READ_BACK]
        rows = (await conn.execute(select(jobs).where(jobs.c.id.in_(part)))).mappings()
        now.update((row["id"], job_from_row(row)) for row in rows)
    out = []
    for r in renewals:
        job = now.get(r.job_id)
        held = (
            job is not None
            and job.state is JobState.RUNNING
            and (job.epoch, job.worker_id) == (r.epoch, r.worker_id)
        )
        out.append(Renewed(held, job))
    return out


async def _renew_one(conn: AsyncConnection, r: Renewal) -> Renewed:
    stmt = _EXTEND_WITH_PROGRESS if r.progress is not None else _EXTEND
    row = (await conn.execute(stmt.returning(*jobs.c), _params(r))).mappings().first()
    if row is not None:
        return Renewed(True, job_from_row(row))
    current = (await conn.execute(select(jobs).where(jobs.c.id == r.job_id))).mappings().first()
    return Renewed(False, None if current is None else job_from_row(current))
