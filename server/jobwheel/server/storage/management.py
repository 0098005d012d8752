"""Operator actions on jobs chosen by a filter: cancel, pause, resume, retry, trigger, delete.

Each action is a state transition allowed from a fixed set of states. It runs in batches
(one short transaction each, so 100,000 matches never hold the database for seconds) and is
fenced by the allowed states, so repeating it is harmless: already-changed jobs no longer
match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobwheel.server.model import (
    AttemptOutcome,
    EventType,
    Job,
    JobFilter,
    JobState,
    Micros,
    Schedule,
    clamp_time,
)
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import job_from_row, schedule_text
from jobwheel.server.storage.events import append_events
from jobwheel.server.storage.filters import job_conditions
from jobwheel.server.storage.schema import attempts, jobs
from sqlalchemy import ColumnElement, case, delete, literal, select, update

S = JobState
NOT_TERMINAL = (S.SCHEDULED, S.QUEUED, S.RUNNING, S.RETRYING, S.PAUSED)


@dataclass(frozen=True)
class Action:
    name: str
    allowed: tuple[JobState, ...]
    event: EventType
    # column -> value or SQL expression, given `now`
    values: Callable[[Micros], dict[str, Any]] = field(default=lambda now: {})
    deletes: bool = False
    # running attempts of the changed jobs end with this outcome and error
    ends_attempts: tuple[AttemptOutcome, str] | None = None


def cancel(reason: str) -> Action:
    return Action(
        "cancel",
        NOT_TERMINAL,
        EventType.CANCELLED,
        lambda now: {
            "state": S.CANCELLED.value,
            "cancel_reason": reason,
            "end_time": now,
            "next_run_time": None,
            "lease_expire_time": None,
        },
        ends_attempts=(AttemptOutcome.CANCELLED, f"Cancelled: {reason}" if reason else "Cancelled"),
    )


PAUSE = Action(
    "pause",
    (S.SCHEDULED, S.QUEUED, S.RETRYING),
    EventType.PAUSED,
    lambda now: {"state": S.PAUSED.value},
)

# A job paused between attempts resumes its retries; any other waits for its next run time
# (promoted at once if that has passed; recurring jobs then apply their misfire policy).
RESUME = Action(
    "resume",
    (S.PAUSED,),
    EventType.RESUMED,
    lambda now: {
        "state": case((jobs.c.attempt > 0, S.RETRYING.value), else_=S.SCHEDULED.value),
        "next_run_time": case(
            (jobs.c.next_run_time.is_(None), literal(now)), else_=jobs.c.next_run_time
        ),
    },
)


def retry(delay: Micros) -> Action:
    """A fresh execution of a FAILED or CANCELLED job (its history is kept)."""
    return Action(
        "retry",
        (S.FAILED, S.CANCELLED),
        EventType.RETRY_SCHEDULED,
        lambda now: {
            "state": (S.SCHEDULED if delay > 0 else S.QUEUED).value,
            "next_run_time": clamp_time(now + delay),
            "attempt": 0,
            "end_time": None,
            "cancel_reason": "",
        },
    )


# Runs now; a recurring job's later occurrences are computed from its schedule as before.
TRIGGER = Action(
    "trigger",
    (S.SCHEDULED, S.RETRYING),
    EventType.RESCHEDULED,
    lambda now: {"state": S.QUEUED.value, "next_run_time": now},
)


def reschedule(schedule: Schedule, next_run_time: Micros, now: Micros) -> Action:
    """A new schedule (and next run time); a paused job stays paused."""
    state = S.SCHEDULED if next_run_time > now else S.QUEUED
    return Action(
        "reschedule",
        (S.SCHEDULED, S.QUEUED, S.RETRYING, S.PAUSED),
        EventType.RESCHEDULED,
        lambda now: {
            "state": case((jobs.c.state == S.PAUSED.value, S.PAUSED.value), else_=state.value),
            "schedule": schedule_text(schedule),
            "recurring": schedule.recurring,
            "next_run_time": next_run_time,
        },
    )


DELETE = Action(
    "delete",
    (S.SCHEDULED, S.QUEUED, S.RETRYING, S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED),
    EventType.DELETED,
    deletes=True,
)


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
        if self.dialect.skip_locked:
            # wait for rows a settle or heartbeat holds (short transactions, taken in seq
            # order): skipping them would report a job as not allowed, or miss it in bulk
            pick = pick.with_for_update()
        chosen = jobs.c.seq.in_(pick.scalar_subquery())
        stmt: Any
        if action.deletes:
            stmt = delete(jobs).where(chosen, allowed).returning(*jobs.c)
        else:
            values = {**action.values(now), "update_time": now}
            stmt = update(jobs).where(chosen, allowed).values(values).returning(*jobs.c)
        async with self._write() as conn:
            changed = [job_from_row(r) for r in (await conn.execute(stmt)).mappings()]
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
            committed = await append_events(conn, [(action.event, j) for j in changed], now)
        self._emit(committed)
        return changed

    async def prune_finished(self, ended_before: Micros, limit: int = 1000) -> int:
        """Deletes up to `limit` terminal jobs (with their attempts) that ended before the
        given time: retention. No events: nobody asked for these deletions one by one."""
        pick = (
            select(jobs.c.seq)
            .where(
                jobs.c.end_time < ended_before,
                jobs.c.state.in_([S.COMPLETED.value, S.FAILED.value, S.CANCELLED.value]),
            )
            .limit(limit)
        )
        async with self._write() as conn:
            seqs = [r.seq for r in await conn.execute(pick)]
            if not seqs:
                return 0
            await conn.execute(delete(jobs).where(jobs.c.seq.in_(seqs)))
        return len(seqs)
