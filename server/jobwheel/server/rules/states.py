"""The job state machine, pure: which states a job enters, and from where.

    new job        -> SCHEDULED (due later) or QUEUED (due now)           initial_state
    promote        SCHEDULED, RETRYING -> QUEUED once due                 WAITING
    claim          QUEUED -> RUNNING (attempt + 1)                         CLAIMABLE
    attempt ends   RUNNING -> RETRYING, QUEUED, SCHEDULED or a terminal   rules.outcomes
    operator       cancel, pause, resume, retry, trigger, reschedule, delete (the Actions)

Storage applies these decisions (as set-based updates fenced by `Action.allowed`); it holds
none of them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from jobwheel.server.model import AttemptOutcome, EventType, JobState, Micros, Schedule

S = JobState
TERMINAL = (S.COMPLETED, S.FAILED, S.CANCELLED)
NOT_TERMINAL = (S.SCHEDULED, S.QUEUED, S.RUNNING, S.RETRYING, S.PAUSED)
# waiting for their next run time: promoted to QUEUED once due
WAITING = (S.SCHEDULED, S.RETRYING)
CLAIMABLE = S.QUEUED


def initial_state(next_run_time: Micros, now: Micros) -> JobState:
    """A new (or rescheduled) job's state: QUEUED if due now, else SCHEDULED."""
    return S.SCHEDULED if next_run_time > now else S.QUEUED


class RunTime(enum.Enum):
    """What an action does to next_run_time."""

    KEEP = "keep"
    CLEAR = "clear"
    NOW = "now"
    NOW_IF_UNSET = "now_if_unset"  # keep it, or now if the job has none
    GIVEN = "given"  # Action.run_time
    DELAYED = "delayed"  # now + Action.run_time (clamped)


@dataclass(frozen=True, slots=True)
class Action:
    """An operator action: allowed from `allowed`; it writes what its fields say.

    state: the state after (None: unchanged; or see `resumes`, `keeps_paused`). Fields left
    at their defaults leave the job's columns as they are.
    """

    name: str
    allowed: tuple[JobState, ...]
    event: EventType
    state: JobState | None = None
    # resume: RETRYING for a job paused between attempts (attempt > 0), else SCHEDULED
    resumes: bool = False
    # reschedule: a PAUSED job stays PAUSED
    keeps_paused: bool = False
    next_run_time: RunTime = RunTime.KEEP
    run_time: Micros = 0  # µs: the time (RunTime.GIVEN) or the delay (RunTime.DELAYED)
    ends: bool = False  # end_time = now
    reopens: bool = False  # a fresh execution: attempt 0, no end_time, no cancel reason
    cancel_reason: str | None = None
    schedule: Schedule | None = None
    deletes: bool = False
    # running attempts of the changed jobs end with this outcome and error
    ends_attempts: tuple[AttemptOutcome, str] | None = None


def cancel(reason: str) -> Action:
    return Action(
        "cancel",
        NOT_TERMINAL,
        EventType.CANCELLED,
        state=S.CANCELLED,
        cancel_reason=reason,
        ends=True,
        next_run_time=RunTime.CLEAR,
        ends_attempts=(AttemptOutcome.CANCELLED, f"Cancelled: {reason}" if reason else "Cancelled"),
    )


PAUSE = Action("pause", (S.SCHEDULED, S.QUEUED, S.RETRYING), EventType.PAUSED, state=S.PAUSED)

# A job paused between attempts resumes its retries; any other waits for its next run time
# (promoted at once if that has passed; recurring jobs then apply their misfire policy).
RESUME = Action(
    "resume", (S.PAUSED,), EventType.RESUMED, resumes=True, next_run_time=RunTime.NOW_IF_UNSET
)


def retry(delay: Micros) -> Action:
    """A fresh execution of a FAILED or CANCELLED job (its history is kept), due after
    `delay` µs."""
    return Action(
        "retry",
        (S.FAILED, S.CANCELLED),
        EventType.RETRY_SCHEDULED,
        state=S.SCHEDULED if delay > 0 else S.QUEUED,
        next_run_time=RunTime.DELAYED,
        run_time=delay,
        reopens=True,
    )


# Runs now; a recurring job's later occurrences are computed from its schedule as before.
TRIGGER = Action(
    "trigger",
    (S.SCHEDULED, S.RETRYING),
    EventType.RESCHEDULED,
    state=S.QUEUED,
    next_run_time=RunTime.NOW,
)


def reschedule(schedule: Schedule, next_run_time: Micros, now: Micros) -> Action:
    """A new schedule (and next run time); a paused job stays paused."""
    return Action(
        "reschedule",
        (S.SCHEDULED, S.QUEUED, S.RETRYING, S.PAUSED),
        EventType.RESCHEDULED,
        state=initial_state(next_run_time, now),
        keeps_paused=True,
        schedule=schedule,
        next_run_time=RunTime.GIVEN,
        run_time=next_run_time,
    )


DELETE = Action(
    "delete",
    (S.SCHEDULED, S.QUEUED, S.RETRYING, S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED),
    EventType.DELETED,
    deletes=True,
)
