"""What an attempt's end does to its job: retries, backoff, timeouts, recurrence, lost
attempts. Pure functions, with the time and the random draw injected."""

from __future__ import annotations

from jobwheel.server import model
from jobwheel.server.model import SECOND, AttemptOutcome, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult

NOW = 1_800_000_000 * SECOND


def running(attempt: int = 1, **fields: object) -> model.Job:
    job = model.Job(
        id="j",
        queue="default",
        task="t",
        payload={},
        labels={},
        priority=0,
        state=JobState.RUNNING,
        schedule=None,
        retry_policy=model.RetryPolicy(),
        timeout=None,
        idempotency_key=None,
        http=None,
        create_time=NOW - 10 * SECOND,
        update_time=NOW - SECOND,
        next_run_time=NOW - SECOND,
        attempt=attempt,
        execution_count=1,
    )
    for name, value in fields.items():
        setattr(job, name, value)
    return job


FAILED = AttemptResult(AttemptOutcome.FAILED, error="ValueError: boom")


def test_default_policy_waits_30s_2m_5m_then_fails() -> None:
    waits = []
    for attempt in (1, 2, 3):
        s = states.settle(running(attempt), FAILED, NOW, rand=0.5)  # 0.5: no jitter
        assert s.after.state is JobState.RETRYING and s.after.attempt == attempt
        assert s.ended.outcome is model.AttemptOutcome.FAILED
        waits.append((s.after.next_run_time or 0) - NOW)
    assert waits == [30 * SECOND, 120 * SECOND, 300 * SECOND]
    last = states.settle(running(4), FAILED, NOW, rand=0.5)
    assert last.after.state is JobState.FAILED and last.after.end_time == NOW
    assert last.after.last_error == "ValueError: boom" and last.after.next_run_time is None


def test_jitter_stays_within_ten_percent() -> None:
    low = states.settle(running(1), FAILED, NOW, rand=0.0).after.next_run_time
    high = states.settle(running(1), FAILED, NOW, rand=0.999).after.next_run_time
    assert low == NOW + 27 * SECOND and high is not None and high <= NOW + 33 * SECOND


def test_timeout_is_recorded_and_retried() -> None:
    s = states.settle(
        running(1), AttemptResult(AttemptOutcome.TIMED_OUT, error="TimeoutError"), NOW, 0.5
    )
    assert s.ended.outcome is model.AttemptOutcome.TIMED_OUT and s.after.state is JobState.RETRYING


def test_retry_after_is_a_floor_and_non_retryable_fails_at_once() -> None:
    later = AttemptResult(AttemptOutcome.FAILED, error="HttpError: 503", retry_after=600 * SECOND)
    assert states.settle(running(1), later, NOW, 0.5).after.next_run_time == NOW + 600 * SECOND
    gone = AttemptResult(AttemptOutcome.FAILED, error="HttpError: 410", retryable=False)
    assert states.settle(running(1), gone, NOW, 0.5).after.state is JobState.FAILED


def test_success_keeps_the_result() -> None:
    s = states.settle(
        running(2), AttemptResult(AttemptOutcome.SUCCEEDED, result={"ok": 1}), NOW, 0.5
    )
    assert (
        s.after.state is JobState.COMPLETED
        and s.after.result == {"ok": 1}
        and s.ended.result == {"ok": 1}
    )
    assert s.ended.outcome is model.AttemptOutcome.SUCCEEDED


def test_recurring_job_goes_on_after_success_and_after_failure() -> None:
    schedule = model.Schedule(start_time=NOW - SECOND, interval=60 * SECOND)
    for result in (AttemptResult(AttemptOutcome.SUCCEEDED), FAILED):
        s = states.settle(running(4, schedule=schedule), result, NOW, 0.5)
        assert s.after.state is JobState.SCHEDULED and s.after.attempt == 0
        assert s.after.next_run_time == NOW - SECOND + 60 * SECOND
    limited = model.Schedule(start_time=NOW - SECOND, interval=60 * SECOND, limit=1)
    done = states.settle(
        running(1, schedule=limited), AttemptResult(AttemptOutcome.SUCCEEDED), NOW, 0.5
    )
    assert done.after.state is JobState.COMPLETED


def test_lost_attempts() -> None:
    again = states.lost(running(1), NOW, "crash")
    assert again.after.state is JobState.QUEUED and again.ended.outcome is model.AttemptOutcome.LOST
    assert states.lost(running(4), NOW, "crash").after.state is JobState.FAILED
    released = states.lost(running(4), NOW, "server stopped", counts=False)
    assert released.after.state is JobState.QUEUED
    schedule = model.Schedule(start_time=NOW - SECOND, interval=60 * SECOND)
    recurring = states.lost(running(4, schedule=schedule), NOW, "crash")
    assert recurring.after.state is JobState.SCHEDULED  # the schedule outlives a lost execution
    assert recurring.ended.outcome is model.AttemptOutcome.LOST
