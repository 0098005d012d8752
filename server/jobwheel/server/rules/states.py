"""The job state machine, pure: which states a job enters, and from where.

    new job        -> SCHEDULED (due later) or QUEUED (due now)           initial_state
    promote        SCHEDULED, RETRYING -> QUEUED once due                 WAITING
    claim          QUEUED -> RUNNING (attempt + 1)                         CLAIMABLE
    attempt ends   RUNNING -> RETRYING, QUEUED, SCHEDULED or a terminal   settle, lost
    operator       cancel, pause, resume, retry, trigger, reschedule, delete (the Actions)

Storage applies these decisions (set-based updates fenced by `Action.allowed`; settlements
fenced by the attempt they end); it holds none of them.

What an attempt's end does to its job (time and randomness passed in):

succeeded                      -> COMPLETED, or the next occurrence of a recurring job
failed / timed out, attempts left and retryable -> RETRYING after the backoff
failed / timed out, none left  -> FAILED, or the next occurrence of a recurring job
lost (crash, expired lease)    -> QUEUED again at once (it counts as an attempt, so a job
                                  that crashes its executor every time still ends)
released (graceful stop)       -> QUEUED again at once; the attempt is on record but not
                                  charged: `released_attempts` grows with `attempt`
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from jobwheel.server import failures, model
from jobwheel.server.frozen_init import quick_frozen_init
from jobwheel.server.model import AttemptOutcome, EventType, JobState, Micros, Schedule
from jobwheel.server.rules import backoff, recurrence
from jobwheel.server.rules.attempt import AttemptResult

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
    """A new schedule (and next run time); a paused job stays paused. A recurring schedule's
    first occurrence is an execution of its own: a job waiting to retry gives its retries up
    (its attempts so far stay on record)."""
    return Action(
        "reschedule",
        (S.SCHEDULED, S.QUEUED, S.RETRYING, S.PAUSED),
        EventType.RESCHEDULED,
        state=initial_state(next_run_time, now),
        keeps_paused=True,
        schedule=schedule,
        next_run_time=RunTime.GIVEN,
        run_time=next_run_time,
        reopens=schedule.recurring,
    )


DELETE = Action(
    "delete",
    (S.SCHEDULED, S.QUEUED, S.RETRYING, S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLED),
    EventType.DELETED,
    deletes=True,
)


# -- attempt ends ------------------------------------------------------------------------------


@quick_frozen_init  # built per job
@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How one attempt ended: the attempts-table row it closes."""

    job_id: str
    execution: int
    attempt: int  # the attempt number the executor held: the fencing number
    outcome: model.AttemptOutcome
    error: str
    result: Any
    now: model.Micros


@quick_frozen_init  # built per job
@dataclass(frozen=True, slots=True)
class Settlement:
    """The writes that end one attempt. Applied only if the job still holds that attempt.

    `after` is the job as it will be once this is applied: storage writes its state,
    next_run_time, attempt, end_time, last_error, result and released_attempts.
    """

    ended: AttemptEnd
    after: model.Job
    events: tuple[model.EventType, ...]
    skipped: int = 0  # occurrences dropped by the overlap policy
    # for a lost attempt: applies only if the lease still ends before this (a heartbeat in
    # between means the executor is alive after all)
    lease_expired_before: model.Micros | None = None

    @property
    def now(self) -> model.Micros:
        return self.ended.now


def _ended(
    job: model.Job, outcome: model.AttemptOutcome, error: str, result: Any, now: model.Micros
) -> AttemptEnd:
    return AttemptEnd(job.id, job.execution_count, job.attempt, outcome, error, result, now)


def _settlement(
    job: model.Job,
    ended: AttemptEnd,
    *,
    state: model.JobState,
    next_run_time: model.Micros | None,
    end_time: model.Micros | None,
    last_error: str,
    result: Any,
    events: tuple[model.EventType, ...],
    attempt: int | None = None,
    released_attempts: int | None = None,
    skipped: int = 0,
    lease_expired_before: model.Micros | None = None,
) -> Settlement:
    """`job` with its current attempt ended; `attempt` and `released_attempts` default to
    the job's own."""
    # Positional, field by field in model.Job's order: one settlement per attempt, and keyword
    # construction or dataclasses.replace costs a third of it (test_settlement_copy.py holds
    # this to dataclasses.replace for every field).
    after = model.Job(
        job.id,
        job.queue,
        job.task,
        job.payload,
        job.labels,
        job.priority,
        state,
        job.schedule,
        job.retry_policy,
        job.timeout,
        job.idempotency_key,
        job.http,
        job.create_time,
        ended.now,  # update_time
        next_run_time,
        job.attempt if attempt is None else attempt,
        job.execution_count,
        job.released_attempts if released_attempts is None else released_attempts,
        job.start_time,
        end_time,
        last_error,
        result,
        job.cancel_reason,
        job.skipped_count + skipped,
        job.progress,
        "",  # worker_id
        None,  # lease_expire_time
        job.traceparent,
        job.seq,
        job.epoch,
    )
    return Settlement(ended, after, events, skipped, lease_expired_before)


def charged(job: model.Job) -> int:
    """Attempts of the current execution that count against max_attempts."""
    return job.attempt - job.released_attempts


def settle(job: model.Job, result: AttemptResult, now: model.Micros, rand: float) -> Settlement:
    """The settlement of `job`'s current attempt (`job` as it was when the attempt started)."""
    succeeded = result.outcome is AttemptOutcome.SUCCEEDED
    error = "" if succeeded else failures.stored(result.error)
    ended = _ended(job, result.outcome, error, result.result if succeeded else None, now)
    retry = (
        not succeeded
        and result.retryable
        and result.outcome is not AttemptOutcome.CANCELLED
        and charged(job) < job.retry_policy.max_attempts
    )
    if retry:
        wait = max(backoff.retry_delay(job.retry_policy, job.attempt, rand), result.retry_after)
        return _settlement(
            job,
            ended,
            state=model.JobState.RETRYING,
            next_run_time=model.clamp_time(now + wait),
            end_time=None,
            last_error=error,
            result=job.result,
            events=(model.EventType.ATTEMPT_FAILED, model.EventType.RETRY_SCHEDULED),
        )
    done_event = model.EventType.COMPLETED if succeeded else model.EventType.FAILED
    if result.outcome is AttemptOutcome.CANCELLED and job.recurring:
        done_event = model.EventType.ATTEMPT_FAILED  # one execution cut short, not the job
    new_result = result.result if succeeded else job.result
    last_error = job.last_error if succeeded else error
    if job.recurring:
        upcoming = recurrence.after_execution(job, now, rand)
        skipped_events = (model.EventType.MISFIRE_SKIPPED,) if upcoming.skipped else ()
        if upcoming.time is not None:
            # The execution is over; the schedule goes on (a failure does not end it). An
            # occurrence already due (kept by BUFFER_ONE, or a RUN_ALL backlog) is queued at
            # once: waiting, it would be taken for a misfire once past the misfire grace.
            due = upcoming.time <= now
            return _settlement(
                job,
                ended,
                state=model.JobState.QUEUED if due else model.JobState.SCHEDULED,
                next_run_time=upcoming.time,
                attempt=0,
                end_time=None,
                last_error=last_error,
                result=new_result,
                skipped=upcoming.skipped,
                events=(
                    done_event,
                    *skipped_events,
                    model.EventType.QUEUED if due else model.EventType.SCHEDULED,
                ),
            )
    # A one-off job ends with its attempt; a recurring one whose schedule is exhausted is
    # complete as a whole, whatever its last execution did.
    complete = succeeded or job.recurring
    return _settlement(
        job,
        ended,
        state=model.JobState.COMPLETED if complete else model.JobState.FAILED,
        next_run_time=None,
        end_time=now,
        last_error=last_error,
        result=new_result,
        events=(done_event,),
    )


def past_timeout(job: model.Job, now: model.Micros) -> bool:
    """Whether a remote worker's attempt of `job` ran past the job's timeout (the server times
    the attempts it runs itself, in-process and HTTP, as it runs them)."""
    return (
        job.timeout is not None
        and job.start_time is not None
        and now > job.start_time + job.timeout
        and not job.worker_id.startswith(model.INPROCESS_PREFIX)
    )


def timed_out(job: model.Job, now: model.Micros, rand: float) -> Settlement:
    """The settlement of a remote worker's attempt past the job's timeout: TIMED_OUT, retried
    per the job's policy as any attempt that timed out."""
    error = failures.timed_out((job.timeout or 0) / model.SECOND)
    return settle(job, AttemptResult(AttemptOutcome.TIMED_OUT, error=error), now, rand)


def lost(
    job: model.Job,
    now: model.Micros,
    why: str,
    *,
    counts: bool = True,
    lease_expired_before: model.Micros | None = None,
) -> Settlement:
    """The settlement of an attempt whose executor vanished: run the job again at once.

    A lost attempt counts against max_attempts (`counts`), so a job that crashes every
    executor still ends; an attempt released by a graceful stop is on record but not charged
    (`released_attempts` grows). A recurring job out of attempts goes on with its next
    occurrence, like any failed execution.
    """
    error = f"LostAttempt: {why}"
    ended = _ended(job, AttemptOutcome.LOST, error, None, now)
    if not counts or charged(job) < job.retry_policy.max_attempts:
        return _settlement(
            job,
            ended,
            state=model.JobState.QUEUED,
            next_run_time=now,
            end_time=None,
            last_error=error,
            result=job.result,
            released_attempts=job.released_attempts + (0 if counts else 1),
            lease_expired_before=lease_expired_before,
            events=(model.EventType.ATTEMPT_LOST, model.EventType.QUEUED),
        )
    if job.recurring:
        out = settle(job, AttemptResult(AttemptOutcome.FAILED, error=error), now, 0.5)
        return replace(
            out,
            ended=replace(out.ended, outcome=AttemptOutcome.LOST),
            lease_expired_before=lease_expired_before,
        )
    return _settlement(
        job,
        ended,
        state=model.JobState.FAILED,
        next_run_time=None,
        end_time=now,
        last_error=error,
        result=job.result,
        lease_expired_before=lease_expired_before,
        events=(model.EventType.ATTEMPT_LOST, model.EventType.FAILED),
    )


# A worker's releases (ReleaseJobs) left uncharged per execution. A deploy or scale-down hands
# a job back once or twice; a job released this often is rather what keeps its workers from
# finishing (or a worker hands back what it will not run), and uncharged releases would let it
# cycle forever with an attempt row each. Past the cap a release is charged like any lost
# attempt: max_attempts ends the loop, and the job still runs again at once while it has
# attempts left (refusing the release instead would leave it RUNNING until its lease expired,
# to be charged then anyway).
MAX_RELEASED_ATTEMPTS = 10


def released(job: model.Job, now: model.Micros, why: str) -> Settlement:
    """A worker gave the lease of `job`'s current attempt back: QUEUED again at once,
    uncharged while the execution has had fewer than MAX_RELEASED_ATTEMPTS uncharged
    attempts; past that charged like a lost attempt (`lost`)."""
    if job.released_attempts < MAX_RELEASED_ATTEMPTS:
        return lost(job, now, why, counts=False)
    past = f"charged: released more than {MAX_RELEASED_ATTEMPTS} times in this execution"
    return lost(job, now, f"{why} ({past})")


# a misfired recurring job's new next run time (None: its schedule ended) and how many runs
# it skipped, from the job (the scheduler's misfire policy)
CatchUp = Callable[[model.Job], tuple[Micros | None, int]]


def caught_up(
    job: model.Job, now: Micros, next_run: Micros | None, skipped: int
) -> tuple[model.Job, list[EventType]]:
    """A recurring job that missed its time (downtime, a pause), moved on: to `next_run`
    having dropped `skipped` occurrences, or, with None, COMPLETED (its schedule ended); and
    the events that tell of it."""
    after = replace(
        job,
        next_run_time=next_run,
        skipped_count=job.skipped_count + skipped,
        state=S.SCHEDULED if next_run is not None else S.COMPLETED,
        end_time=None if next_run is not None else now,
        update_time=now,
    )
    kinds = [EventType.MISFIRE_SKIPPED] if skipped else []
    if next_run is None:
        kinds.append(EventType.COMPLETED)
    return after, kinds
