"""Starting and ending attempts inside a caller's write transaction.

The claim (a remote worker's lease too) and the settlement of attempt endings are steps that
the dispatch cycle runs together in one transaction: each returns the event changes it made,
and the caller appends them once, last (storage/events.py). Each step is set-based, a few
statements whatever the number of jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobwheel.server.ids import new_id
from jobwheel.server.model import AttemptOutcome, EventType, Job, JobState, Micros
from jobwheel.server.rules.states import Settlement
from jobwheel.server.storage.convert import job_from_row, job_result_doc
from jobwheel.server.storage.dialect import Dialect
from jobwheel.server.storage.events import Change
from jobwheel.server.storage.schema import attempts, jobs
from sqlalchemy import ColumnElement, bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

_settle_job = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("b_id"),
        jobs.c.state == JobState.RUNNING.value,
        jobs.c.attempt == bindparam("b_held_attempt"),
        jobs.c.execution_count == bindparam("b_execution"),
    )
    .values(
        state=bindparam("b_state"),
        next_run_time=bindparam("b_next_run_time"),
        attempt=bindparam("b_attempt"),
        end_time=bindparam("b_end_time"),
        last_error=bindparam("b_last_error"),
        result=bindparam("b_result"),
        skipped_count=jobs.c.skipped_count + bindparam("b_skipped"),
        released_attempts=bindparam("b_released"),
        worker_id="",
        lease_expire_time=None,
        update_time=bindparam("b_now"),
    )
)
_settle_attempt = (
    update(attempts)
    .where(
        attempts.c.job_id == bindparam("b_id"),
        attempts.c.execution == bindparam("b_execution"),
        attempts.c.number == bindparam("b_held_attempt"),
        attempts.c.outcome == AttemptOutcome.RUNNING.value,
    )
    .values(
        end_time=bindparam("b_now"),
        outcome=bindparam("b_outcome"),
        error=bindparam("b_error"),
        result=bindparam("b_attempt_result"),
    )
)


async def start_attempts(
    conn: AsyncConnection,
    dialect: Dialect,
    where: list[ColumnElement[bool]],
    limit: int,
    worker_id: str,
    now: Micros,
    lease_until: Micros,
) -> list[Job]:
    """QUEUED jobs matching `where` (up to `limit`, best priority first, FIFO within one)
    become RUNNING for `worker_id`, each with a new attempt row; returned in that order."""
    pick = (
        select(jobs.c.seq).where(*where).order_by(jobs.c.priority.desc(), jobs.c.seq).limit(limit)
    )
    pick = dialect.lock_rows(pick, skip_locked=True)
    stmt = (
        update(jobs)
        .where(jobs.c.seq.in_(pick.scalar_subquery()))
        .values(
            state=JobState.RUNNING.value,
            # A job that has not started its current execution begins a new one.
            execution_count=jobs.c.execution_count + case((jobs.c.attempt == 0, 1), else_=0),
            released_attempts=case((jobs.c.attempt == 0, 0), else_=jobs.c.released_attempts),
            attempt=jobs.c.attempt + 1,
            start_time=now,
            update_time=now,
            worker_id=worker_id,
            lease_expire_time=lease_until,
        )
        .returning(*jobs.c)
    )
    claimed = [job_from_row(r) for r in (await conn.execute(stmt)).mappings()]
    if claimed:
        await conn.execute(
            attempts.insert(),
            [
                {
                    "id": new_id(),
                    "job_id": job.id,
                    "execution": job.execution_count,
                    "number": job.attempt,
                    "start_time": now,
                    "outcome": AttemptOutcome.RUNNING.value,
                    "worker_id": worker_id,
                }
                for job in claimed
            ],
        )
    claimed.sort(key=lambda j: (-j.priority, j.seq))
    return claimed


def started(claimed: Sequence[Job]) -> list[Change]:
    return [(EventType.STARTED, job) for job in claimed]


async def settle_endings(
    conn: AsyncConnection, dialect: Dialect, settlements: Sequence[Settlement]
) -> tuple[list[bool], list[Change]]:
    """Applies the settlements whose attempt the job still holds; says which applied, and
    the event changes of those."""
    if not settlements:
        return [], []
    held = await _held_attempts(conn, dialect, [s.ended.job_id for s in settlements])
    applies = [_holds(held.get(s.ended.job_id), s) for s in settlements]
    applied = [s for s, ok in zip(settlements, applies, strict=True) if ok]
    if applied:
        params = [_settlement_params(s) for s in applied]
        await conn.execute(_settle_job, params)
        await conn.execute(_settle_attempt, params)
    return applies, [(etype, s.after) for s in applied for etype in s.events]


async def _held_attempts(
    conn: AsyncConnection, dialect: Dialect, job_ids: list[str]
) -> dict[str, tuple[int, int, Micros | None]]:
    """(execution, attempt, lease end) of each RUNNING job among `job_ids`, locked until
    commit."""
    held: dict[str, tuple[int, int, Micros | None]] = {}
    for start in range(0, len(job_ids), dialect.max_in_list):
        stmt = select(
            jobs.c.id, jobs.c.execution_count, jobs.c.attempt, jobs.c.lease_expire_time
        ).where(
            jobs.c.id.in_(job_ids[start : start + dialect.max_in_list]),
            jobs.c.state == JobState.RUNNING.value,
        )
        stmt = dialect.lock_rows(stmt)
        for r in await conn.execute(stmt):
            held[r.id] = (r.execution_count, r.attempt, r.lease_expire_time)
    return held


def _holds(held: tuple[int, int, Micros | None] | None, s: Settlement) -> bool:
    """The job still runs the attempt `s` settles (and, for a lost one, its lease ran out)."""
    if held is None or held[:2] != (s.ended.execution, s.ended.attempt):
        return False
    limit = s.lease_expired_before
    return limit is None or (held[2] is not None and held[2] < limit)


def _settlement_params(s: Settlement) -> dict[str, Any]:
    ended, after = s.ended, s.after
    return {
        "b_id": ended.job_id,
        "b_held_attempt": ended.attempt,
        "b_execution": ended.execution,
        "b_state": after.state.value,
        "b_next_run_time": after.next_run_time,
        "b_attempt": after.attempt,
        "b_end_time": after.end_time,
        "b_last_error": after.last_error,
        "b_result": job_result_doc(after.result),
        "b_now": ended.now,
        "b_skipped": s.skipped,
        "b_released": after.released_attempts,
        "b_outcome": ended.outcome.value,
        "b_error": ended.error,
        "b_attempt_result": job_result_doc(ended.result),
    }
