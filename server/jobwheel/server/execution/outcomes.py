"""What an attempt's end does to its job (pure: no I/O, time and randomness passed in).

succeeded                      -> COMPLETED, or the next occurrence of a recurring job
failed / timed out, attempts left and retryable -> RETRYING after the backoff
failed / timed out, none left  -> FAILED, or the next occurrence of a recurring job
lost (crash, expired lease)    -> QUEUED again at once (it counts as an attempt, so a job
                                  that crashes its executor every time still ends)
released (graceful stop)       -> QUEUED again at once; the attempt is on record but not
                                  charged: `released_attempts` grows with `attempt`
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from jobwheel.server import failures, model
from jobwheel.server.execution.base import AttemptResult, Outcome
from jobwheel.server.scheduling import backoff, recurrence

_ATTEMPT_OUTCOME = {
    Outcome.SUCCEEDED: model.AttemptOutcome.SUCCEEDED,
    Outcome.FAILED: model.AttemptOutcome.FAILED,
    Outcome.TIMED_OUT: model.AttemptOutcome.TIMED_OUT,
    Outcome.CANCELLED: model.AttemptOutcome.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class Settlement:
    """The writes that end one attempt. Applied only if the job still holds that attempt."""

    job_id: str
    execution: int
    epoch: int  # the attempt number the executor held: the fencing token
    state: model.JobState
    next_run_time: model.Micros | None
    attempt: int
    end_time: model.Micros | None
    last_error: str
    result: Any
    attempt_outcome: model.AttemptOutcome
    attempt_error: str
    attempt_result: Any
    now: model.Micros
    events: tuple[model.EventType, ...]
    after: model.Job  # the job as it will be once this is applied
    released_attempts: int  # attempts of the execution not charged against max_attempts
    skipped: int = 0  # occurrences dropped by the overlap policy
    # for a lost attempt: applies only if the lease still ends before this (a heartbeat in
    # between means the executor is alive after all)
    lease_expired_before: model.Micros | None = None


_FAILED = (model.AttemptOutcome.FAILED, model.AttemptOutcome.TIMED_OUT)


def log_if_failed(s: Settlement) -> None:
    """The log record of an applied settlement that ends a failed or timed-out attempt."""
    if s.attempt_outcome in _FAILED:
        failures.log_failed_attempt(
            job_id=s.job_id,
            task=s.after.task,
            queue=s.after.queue,
            attempt=s.epoch,
            outcome=s.attempt_outcome.value,
            error=s.attempt_error,
            retry=s.state is model.JobState.RETRYING,
        )


def _settlement(job: model.Job, **fields: Any) -> Settlement:
    after = replace(
        job,
        state=fields["state"],
        next_run_time=fields["next_run_time"],
        attempt=fields["attempt"],
        end_time=fields["end_time"],
        last_error=fields["last_error"],
        result=fields["result"],
        worker_id="",
        lease_expire_time=None,
        update_time=fields["now"],
        skipped_count=job.skipped_count + fields.get("skipped", 0),
        released_attempts=fields["released_attempts"],
    )
    return Settlement(after=after, **fields)


def _attempt_end(
    job: model.Job, outcome: model.AttemptOutcome, error: str, result: Any, now: model.Micros
) -> dict[str, Any]:
    """The fields every settlement of `job`'s current attempt shares."""
    return {
        "job_id": job.id,
        "execution": job.execution_count,
        "epoch": job.attempt,
        "attempt_outcome": outcome,
        "attempt_error": error,
        "attempt_result": result,
        "now": now,
        "released_attempts": job.released_attempts,
    }


def charged(job: model.Job) -> int:
    """Attempts of the current execution that count against max_attempts."""
    return job.attempt - job.released_attempts


def settle(job: model.Job, result: AttemptResult, now: model.Micros, rand: float) -> Settlement:
    """The settlement of `job`'s current attempt (`job` as it was when the attempt started)."""
    succeeded = result.outcome is Outcome.SUCCEEDED
    error = "" if succeeded else result.error
    base = _attempt_end(
        job,
        _ATTEMPT_OUTCOME[result.outcome],
        error,
        result.result if succeeded else None,
        now,
    )
    retry = (
        not succeeded
        and result.retryable
        and result.outcome is not Outcome.CANCELLED
        and charged(job) < job.retry_policy.max_attempts
    )
    if retry:
        wait = max(backoff.retry_delay(job.retry_policy, job.attempt, rand), result.retry_after)
        return _settlement(
            job,
            **base,
            state=model.JobState.RETRYING,
            next_run_time=model.clamp_time(now + wait),
            attempt=job.attempt,
            end_time=None,
            last_error=error,
            result=job.result,
            events=(model.EventType.ATTEMPT_FAILED, model.EventType.RETRY_SCHEDULED),
        )
    done_event = model.EventType.COMPLETED if succeeded else model.EventType.FAILED
    if result.outcome is Outcome.CANCELLED and job.recurring:
        done_event = model.EventType.ATTEMPT_FAILED  # one execution cut short, not the job
    new_result = result.result if succeeded else job.result
    last_error = job.last_error if succeeded else error
    if job.recurring:
        upcoming = recurrence.after_execution(job, now, rand)
        skipped_events = (model.EventType.MISFIRE_SKIPPED,) if upcoming.skipped else ()
        if upcoming.time is not None:
            # The execution is over; the schedule goes on (a failure does not end it).
            return _settlement(
                job,
                **base,
                state=model.JobState.SCHEDULED,
                next_run_time=upcoming.time,
                attempt=0,
                end_time=None,
                last_error=last_error,
                result=new_result,
                skipped=upcoming.skipped,
                events=(done_event, *skipped_events, model.EventType.SCHEDULED),
            )
        # The schedule is exhausted: the job as a whole is complete.
        return _settlement(
            job,
            **base,
            state=model.JobState.COMPLETED,
            next_run_time=None,
            attempt=job.attempt,
            end_time=now,
            last_error=last_error,
            result=new_result,
            events=(done_event,),
        )
    return _settlement(
        job,
        **base,
        state=model.JobState.COMPLETED if succeeded else model.JobState.FAILED,
        next_run_time=None,
        attempt=job.attempt,
        end_time=now,
        last_error=last_error,
        result=new_result,
        events=(done_event,),
    )


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
    base = _attempt_end(job, model.AttemptOutcome.LOST, error, None, now)
    base.update(last_error=error, result=job.result, attempt=job.attempt)
    if not counts:
        base["released_attempts"] = job.released_attempts + 1
    if not counts or charged(job) < job.retry_policy.max_attempts:
        return _settlement(
            job,
            **base,
            lease_expired_before=lease_expired_before,
            state=model.JobState.QUEUED,
            next_run_time=now,
            end_time=None,
            events=(model.EventType.ATTEMPT_LOST, model.EventType.QUEUED),
        )
    if job.recurring:
        out = settle(job, AttemptResult(Outcome.FAILED, error=error), now, 0.5)
        return replace(
            out,
            attempt_outcome=model.AttemptOutcome.LOST,
            lease_expired_before=lease_expired_before,
        )
    return _settlement(
        job,
        **base,
        lease_expired_before=lease_expired_before,
        state=model.JobState.FAILED,
        next_run_time=None,
        end_time=now,
        events=(model.EventType.ATTEMPT_LOST, model.EventType.FAILED),
    )
