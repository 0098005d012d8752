"""A graceful stop releases an attempt without charging it: whatever mix of releases, crashes
and failures, a job fails only after max_attempts charged tries (property-based)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.model import SECOND, AttemptOutcome, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult

from tests.unit.test_outcomes import FAILED, NOW, running


def claimed(after: model.Job) -> model.Job:
    """The claim: the next attempt starts (a new execution resets the released count)."""
    fresh = after.attempt == 0
    return replace(
        after,
        state=JobState.RUNNING,
        attempt=after.attempt + 1,
        released_attempts=0 if fresh else after.released_attempts,
    )


@given(
    max_attempts=st.integers(1, 6),
    ends=st.lists(st.sampled_from(["release", "crash", "fail"]), min_size=1, max_size=40),
)
def test_only_charged_attempts_use_up_the_budget(max_attempts: int, ends: list[str]) -> None:
    job = running(attempt=1, retry_policy=model.RetryPolicy(max_attempts=max_attempts))
    charged = 0
    for end in ends:
        if end == "release":
            s = states.lost(job, NOW, "server stopped", counts=False)
        elif end == "crash":
            s = states.lost(job, NOW, "executor lost")
        else:
            s = states.settle(job, FAILED, NOW, 0.5)
        if end != "release":
            charged += 1
        after = s.after
        assert after.attempt == job.attempt  # every attempt stays on record
        assert after.attempt - after.released_attempts == charged
        if charged >= max_attempts:
            assert after.state is JobState.FAILED
            return
        assert after.state in (JobState.QUEUED, JobState.RETRYING)
        job = claimed(after)
    assert charged < max_attempts


def test_a_released_attempt_of_a_recurring_job_stays_in_its_execution() -> None:
    schedule = model.Schedule(interval=60 * SECOND, start_time=NOW - SECOND)
    job = running(attempt=2, released_attempts=1, schedule=schedule)
    released = states.lost(job, NOW, "server stopped", counts=False).after
    assert (released.state, released.attempt, released.released_attempts) == (
        JobState.QUEUED,
        2,
        2,
    )
    # a success ends the execution; the next claim starts a fresh count
    done = states.settle(claimed(released), AttemptResult(AttemptOutcome.SUCCEEDED), NOW, 0.5)
    assert done.after.attempt == 0 and claimed(done.after).released_attempts == 0


def test_a_worker_release_is_charged_past_the_cap() -> None:
    cap = states.MAX_RELEASED_ATTEMPTS
    policy = model.RetryPolicy(max_attempts=2)
    # the cap-th release of an execution is still free
    at_cap = running(attempt=cap, released_attempts=cap - 1, retry_policy=policy)
    free = states.released(at_cap, NOW, "released by the worker").after
    assert (free.state, free.released_attempts) == (JobState.QUEUED, cap)
    assert free.last_error == "LostAttempt: released by the worker"
    # one past it is charged like a lost attempt: the job runs again while it has attempts
    past = running(attempt=cap + 1, released_attempts=cap, retry_policy=policy)
    charged = states.released(past, NOW, "released by the worker")
    assert charged.ended.outcome is AttemptOutcome.LOST
    assert (charged.after.state, charged.after.released_attempts) == (JobState.QUEUED, cap)
    assert "charged: released more than" in charged.after.last_error
    # and the charge counts: with its one charged attempt used, the next one past fails it
    spent = running(attempt=cap + 2, released_attempts=cap, retry_policy=policy)
    assert states.released(spent, NOW, "released by the worker").after.state is JobState.FAILED
