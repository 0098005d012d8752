"""A settlement's job is the settled job with only the settlement's fields changed: the copy
is built positionally for speed, so every other field must come through as it was
(property-based, over every way an attempt ends)."""

from __future__ import annotations

from dataclasses import fields, replace

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.model import SECOND, AttemptOutcome
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult

from tests.unit.test_outcomes import NOW, running

# what a settlement writes (Settlement's docstring, plus the lease it ends)
WRITTEN = {
    "state",
    "next_run_time",
    "attempt",
    "end_time",
    "last_error",
    "result",
    "released_attempts",
    "skipped_count",
    "worker_id",
    "lease_expire_time",
    "update_time",
}
# a value of every kept field that is neither its default nor any other field's value
KEPT = {
    "id": "job-id",
    "queue": "the-queue",
    "task": "the-task",
    "payload": {"p": 1},
    "labels": {"l": "v"},
    "priority": 7,
    "timeout": 9 * SECOND,
    "idempotency_key": "the-key",
    "http": model.HttpTarget(url="https://example.invalid/hook"),
    "create_time": NOW - 100 * SECOND,
    "execution_count": 3,
    "start_time": NOW - 5 * SECOND,
    "cancel_reason": "the-reason",
    "progress": {"done": 1},
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "seq": 4242,
    "epoch": 17,
}


def test_every_field_of_the_job_is_either_written_or_kept() -> None:
    names = {f.name for f in fields(model.Job)}
    assert names - WRITTEN - {"schedule", "retry_policy"} == set(KEPT)


@given(
    end=st.sampled_from(["succeeded", "failed", "cancelled", "lost", "released", "exhausted"]),
    recurring=st.booleans(),
    max_attempts=st.integers(1, 4),
    attempt=st.integers(1, 4),
)
def test_a_settlement_changes_only_what_it_writes(
    end: str, recurring: bool, max_attempts: int, attempt: int
) -> None:
    schedule = model.Schedule(interval=60 * SECOND, start_time=NOW - SECOND) if recurring else None
    job = running(
        attempt=attempt,
        schedule=schedule,
        retry_policy=model.RetryPolicy(max_attempts=max_attempts),
        worker_id="w",
        lease_expire_time=NOW + SECOND,
        skipped_count=1,
        result={"before": True},
        last_error="before",
        **KEPT,
    )
    if end == "lost":
        s = states.lost(job, NOW, "executor lost")
    elif end == "released":
        s = states.released(job, NOW, "server stopped")
    else:
        outcome = {
            "succeeded": AttemptOutcome.SUCCEEDED,
            "cancelled": AttemptOutcome.CANCELLED,
        }.get(end, AttemptOutcome.FAILED)
        retryable = end != "exhausted"
        s = states.settle(job, AttemptResult(outcome, error="E", retryable=retryable), NOW, 0.5)
    after = s.after
    assert after == replace(job, **{name: getattr(after, name) for name in WRITTEN})
    assert (after.worker_id, after.lease_expire_time, after.update_time) == ("", None, NOW)
