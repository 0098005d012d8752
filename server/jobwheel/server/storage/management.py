"""Operator actions (rules/states.py) applied to jobs chosen by a filter; retention.

Each action is a state transition allowed from a fixed set of states. It runs in batches
(one short transaction each, so 100,000 matches never hold the database for seconds) and is
fenced by the allowed states, so repeating it is harmless: already-changed jobs no longer
match.
"""

from __future__ import annotations

from typing import Any

from jobwheel.server.model import AttemptOutcome, Job, JobFilter, JobState, Micros, clamp_time
from jobwheel.server.rules.states import TERMINAL, Action, RunTime
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import deleted_job_snapshot, job_from_row, schedule_text
from jobwheel.server.storage.events import append_events
from jobwheel.server.storage.filters import job_conditions
from jobwheel.server.storage.schema import Unindexed, attempts, jobs
from sqlalchemy import ColumnElement, case, delete, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

S = JobState


def _values(action: Action, now: Micros) -> dict[str, Any]:
    """The action's writes as column -> value or SQL expression."""
    values: dict[str, Any] = {"update_time": now}
    state: Any = action.state.value if action.state is not None else None
    if action.resumes:
        state = case((jobs.c.attempt > 0, S.RETRYING.value), else_=S.SCHEDULED.value)
    elif action.keeps_paused and state is not None:
        state = case((jobs.c.state == S.PAUSED.value, S.PAUSED.value), else_=state)
    if state is not None:
        values["state"] = state
    if action.cancel_reason is not None:
        values["cancel_reason"] = action.cancel_reason
    if action.ends:
        values["end_time"] = now
    run = action.next_run_time
    if run is RunTime.CLEAR:
        values["next_run_time"] = None
    elif run is RunTime.NOW:
        values["next_run_time"] = now
    elif run is RunTime.NOW_IF_UNSET:
        values["next_run_time"] = case(
            (jobs.c.next_run_time.is_(None), literal(now)), else_=jobs.c.next_run_time
        )
    elif run is RunTime.GIVEN:
        values["next_run_time"] = action.run_time
    elif run is RunTime.DELAYED:
        values["next_run_time"] = clamp_time(now + action.run_time)
    if action.next_run_time is RunTime.CLEAR:  # cancel: nothing runs or waits any more
        values["lease_expire_time"] = None
    if action.reopens:
        values.update(attempt=0, end_time=None, cancel_reason="")
    if action.schedule is not None:
        values.update(schedule=schedule_text(action.schedule), recurring=action.schedule.recurring)
    return values


class Management(StoreBase):
    """Mixed into Store."""

    async def apply_action(
        self, flt: JobFilter, action: Action, now: Micros, limit: int = 1000
    ) -> list[Job]:
        """One batch: up to `limit` matching jobs in an allowed state, changed; returns them
        as they are after the change (as they were, for a delete)."""
        allowed = jobs.c.state.in_([s.value for s in action.allowed])
        conds: list[ColumnElement[bool]] = [*job_conditions(self.dialect, flt), allowed]
        pick = select(jobs.c.seq).where(*conds).order_by(jobs.c.seq).limit(limit)
        # wait for rows a settle or heartbeat holds (short transactions; seq order here):
        # skipping them would report a job as not allowed, or miss it in bulk
        pick = self.dialect.lock_rows(pick)
        chosen = jobs.c.seq.in_(pick.scalar_subquery())
        stmt: Any
        if action.deletes:
            stmt = delete(jobs).where(chosen, allowed).returning(*jobs.c)
        else:
            values = _values(action, now)
            stmt = update(jobs).where(chosen, allowed).values(values).returning(*jobs.c)
        async with self._write() as conn:
            changed = [job_from_row(r) for r in (await conn.execute(stmt)).mappings()]
            if changed and action.deletes:
                await _delete_attempts(conn, attempts.c.job_id.in_([j.id for j in changed]))
            if changed and action.ends_attempts is not None:
                outcome, error = action.ends_attempts
                await conn.execute(
                    update(attempts)
                    .where(
                        attempts.c.job_id.in_([j.id for j in changed]),
                        attempts.c.outcome == AttemptOutcome.RUNNING.value,
                    )
                    .values(outcome=outcome.value, error=error, end_time=now)
                )
            changed.sort(key=lambda j: j.seq)
            # a deleted job's payload goes with its DELETED event: the replay of its events
            # has no row left to read it from
            snapshots = [deleted_job_snapshot(j) for j in changed] if action.deletes else None
            committed = await append_events(
                conn, [(action.event, j) for j in changed], now, snapshots
            )
        self._emit(committed)
        return changed

    async def prune_finished(self, ended_before: Micros, limit: int = 1000) -> int:
        """Deletes up to `limit` terminal jobs (with their attempts) that ended before the
        given time: retention. No events: nobody asked for these deletions one by one."""
        terminal = [s.value for s in TERMINAL]
        ended = (jobs.c.end_time < ended_before, jobs.c.state.in_(terminal))
        # through the end time's index: by the state's, SQLite read every finished job
        # (300,000 of them: 0.3 s with the write lock held) when none had passed retention
        by_end_time = (jobs.c.end_time < ended_before, Unindexed(jobs.c.state).in_(terminal))
        pick = select(jobs.c.seq).where(*by_end_time).limit(limit)
        async with self._write() as conn:
            # the DELETE checks again: a job retried (and maybe claimed) since the pick is
            # no longer terminal, and keeps its row and its attempts
            stmt = delete(jobs).where(jobs.c.seq.in_(pick.scalar_subquery()), *ended)
            ids = [r.id for r in await conn.execute(stmt.returning(jobs.c.id))]
            if ids:
                await _delete_attempts(conn, attempts.c.job_id.in_(ids))
        return len(ids)


async def _delete_attempts(conn: AsyncConnection, of_jobs: ColumnElement[bool]) -> None:
    """The attempts of jobs deleted in the same transaction, on PostgreSQL, which has no
    foreign key to cascade (see schema.attempts); on SQLite the key's cascade already did."""
    if conn.dialect.name == "postgresql":
        await conn.execute(delete(attempts).where(of_jobs))
