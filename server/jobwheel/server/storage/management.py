"""Operator actions (rules/states.py) applied to jobs chosen by a filter; retention.

Each action is a state transition allowed from a fixed set of states. It runs in batches
(one short transaction each, so 100,000 matches never hold the database for seconds), of at
most MAX_BATCH_BYTES of payloads and results (a thousand jobs of 1 MiB would be a gigabyte read,
decoded and logged in one transaction), and is fenced by the allowed states, so repeating it
is harmless: already-changed jobs no longer match. Batches go forward by seq: a job changed by
an earlier batch of the same call (retried, and failed again since) is not changed twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobwheel.server.model import AttemptOutcome, Job, JobFilter, JobState, Micros, clamp_time
from jobwheel.server.rules.states import TERMINAL, Action, RunTime
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import deleted_job_snapshot, job_from_row, schedule_text
from jobwheel.server.storage.events import append_events
from jobwheel.server.storage.filters import job_conditions
from jobwheel.server.storage.schema import Unindexed, attempts, jobs
from sqlalchemy import ColumnElement, case, delete, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

S = JobState
# the payloads and results one batch of an action reads and writes at most (one job of any
# size goes alone)
MAX_BATCH_BYTES = 4 << 20


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
        changed, _ = await self.apply_action_batch(flt, action, now, limit=limit)
        return changed

    async def apply_action_batch(
        self, flt: JobFilter, action: Action, now: Micros, *, limit: int = 1000, after: int = 0
    ) -> tuple[list[Job], int | None]:
        """One batch of a bulk action: the first matching jobs in an allowed state past seq
        `after`, up to `limit` of them and MAX_BATCH_BYTES of payloads and results, changed.
        Returns them (in seq order, as after the change; as they were, for a delete) and the
        seq the next batch goes on after, or None when no job is left past them."""
        allowed = jobs.c.state.in_([s.value for s in action.allowed])
        conds: list[ColumnElement[bool]] = [*job_conditions(self.dialect, flt), allowed]
        if after:
            conds.append(jobs.c.seq > after)
        size = self.dialect.text_bytes(jobs.c.payload) + func.coalesce(
            self.dialect.text_bytes(jobs.c.result), 0
        )
        pick = select(jobs.c.seq, size).where(*conds).order_by(jobs.c.seq).limit(limit)
        # wait for rows a settle or heartbeat holds (short transactions; seq order here):
        # skipping them would report a job as not allowed, or miss it in bulk
        pick = self.dialect.lock_rows(pick)
        async with self._write() as conn:
            picked = (await conn.execute(pick)).all()
            seqs = _within_bytes(picked)
            if not seqs:
                return [], None
            chosen = jobs.c.seq.in_(seqs)
            stmt: Any
            if action.deletes:
                stmt = delete(jobs).where(chosen, allowed).returning(*jobs.c)
            else:
                values = _values(action, now)
                stmt = update(jobs).where(chosen, allowed).values(values).returning(*jobs.c)
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
        more = len(seqs) < len(picked) or len(picked) == limit
        return changed, seqs[-1] if more else None

    async def prune_finished(
        self, ended_before: Micros, limit: int = 1000, *, now: Micros | None = None
    ) -> int:
        """Deletes up to `limit` terminal jobs (with their attempts) that ended before the
        given time: retention. No events: nobody asked for these deletions one by one. A job
        whose idempotency key still holds at `now` (default `ended_before`) stays: the key
        would otherwise be free again within its window."""
        terminal = [s.value for s in TERMINAL]
        window = self.idempotency_window
        lapsed: ColumnElement[bool] = jobs.c.idempotency_key.is_(None)  # forever: keyed stay
        if window is not None:
            lapsed = or_(lapsed, jobs.c.create_time < (now or ended_before) - window)
        ended = (jobs.c.end_time < ended_before, jobs.c.state.in_(terminal), lapsed)
        # through the end time's index: by the state's, SQLite read every finished job
        # (300,000 of them: 0.3 s with the write lock held) when none had passed retention
        by_end_time = (
            jobs.c.end_time < ended_before,
            Unindexed(jobs.c.state).in_(terminal),
            lapsed,
        )
        pick = select(jobs.c.seq).where(*by_end_time).limit(limit)
        async with self._write() as conn:
            # the DELETE checks again: a job retried (and maybe claimed) since the pick is
            # no longer terminal, and keeps its row and its attempts
            stmt = delete(jobs).where(jobs.c.seq.in_(pick.scalar_subquery()), *ended)
            ids = [r.id for r in await conn.execute(stmt.returning(jobs.c.id))]
            if ids:
                await _delete_attempts(conn, attempts.c.job_id.in_(ids))
        return len(ids)


def _within_bytes(picked: Sequence[Any]) -> list[int]:
    """The seqs of the first (seq, bytes) rows that hold at most MAX_BATCH_BYTES together (at
    least one)."""
    seqs: list[int] = []
    total = 0
    for seq, size in picked:
        total += size or 0
        if seqs and total > MAX_BATCH_BYTES:
            break
        seqs.append(seq)
    return seqs


async def _delete_attempts(conn: AsyncConnection, of_jobs: ColumnElement[bool]) -> None:
    """The attempts of jobs deleted in the same transaction, on PostgreSQL, which has no
    foreign key to cascade (see schema.attempts); on SQLite the key's cascade already did."""
    if conn.dialect.name == "postgresql":
        await conn.execute(delete(attempts).where(of_jobs))
