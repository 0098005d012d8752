"""A jobs-table row reads back as the job it holds, field by field: job_from_row builds the
Job positionally for speed, so a field out of place or left out must show here."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.model import SECOND, JobState
from jobwheel.server.storage.convert import (
    http_to_doc,
    job_from_row,
    retry_to_doc,
    schedule_text,
)

NOW = 1_800_000_000 * SECOND

# every field of Job at a value that is neither its default nor any other field's value
VALUES: dict[str, Any] = {
    "id": "job-id",
    "queue": "the-queue",
    "task": "the-task",
    "payload": {"p": 1},
    "labels": {"l": "v"},
    "priority": 7,
    "state": JobState.RUNNING,
    "schedule": model.Schedule(interval=60 * SECOND, start_time=NOW),
    "retry_policy": model.RetryPolicy(max_attempts=9),
    "timeout": 9 * SECOND,
    "idempotency_key": "the-key",
    "http": model.HttpTarget(url="https://example.invalid/hook", headers={"h": "v"}),
    "create_time": NOW - 100 * SECOND,
    "update_time": NOW - 50 * SECOND,
    "next_run_time": NOW - 40 * SECOND,
    "attempt": 3,
    "execution_count": 4,
    "released_attempts": 2,
    "start_time": NOW - 5 * SECOND,
    "end_time": NOW - 4 * SECOND,
    "last_error": "the-error",
    "result": {"r": [1, None]},
    "cancel_reason": "the-reason",
    "skipped_count": 5,
    "progress": {"done": 1},
    "worker_id": "the-worker",
    "lease_expire_time": NOW + 30 * SECOND,
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "seq": 4242,
    "epoch": 11,
}


def _row(job: model.Job) -> dict[str, Any]:
    """The jobs-table columns of `job`, as the database hands them back."""
    row: dict[str, Any] = {f.name: getattr(job, f.name) for f in fields(model.Job)}
    for name in ("payload", "labels", "result", "progress"):
        row[name] = json.dumps(row[name])
    row["state"] = job.state.value
    row["schedule"] = None if job.schedule is None else schedule_text(job.schedule)
    row["retry_policy"] = json.dumps(retry_to_doc(job.retry_policy))
    row["http"] = None if job.http is None else json.dumps(http_to_doc(job.http))
    return row


def test_every_field_is_tried() -> None:
    assert list(VALUES) == [f.name for f in fields(model.Job)]


def test_a_row_reads_back_field_by_field() -> None:
    job = model.Job(**VALUES)
    assert job_from_row(_row(job)) == job


def test_a_row_with_the_nullable_fields_empty_reads_back() -> None:
    empty = dict.fromkeys(
        ("schedule", "timeout", "idempotency_key", "http", "next_run_time", "start_time"), None
    )
    job = model.Job(**{**VALUES, **empty, "labels": {}, "result": None, "progress": None})
    assert job_from_row(_row(job)) == job


_INT64 = st.integers(-(2**63), 2**63 - 1)


@given(
    schedule=st.builds(
        model.Schedule,
        start_time=st.none() | _INT64,
        cron=st.text(max_size=12),
        time_zone=st.text(max_size=12),
        interval=st.none() | _INT64,
        limit=_INT64,
        end_time=st.none() | _INT64,
        jitter=_INT64,
        overlap_policy=st.sampled_from(model.OverlapPolicy),
        misfire_policy=st.sampled_from(model.MisfirePolicy),
        catchup_window=_INT64,
        dst_gap_policy=st.sampled_from(model.DstGapPolicy),
        dst_fold_policy=st.sampled_from(model.DstFoldPolicy),
        anchor=st.none() | _INT64,
    )
)
def test_any_stored_schedule_reads_back(schedule: model.Schedule) -> None:
    """The schedule column is read by orjson: every int64 and string the store writes in it
    comes back exact (each one-off job's schedule is its own, past the text cache)."""
    job = model.Job(**{**VALUES, "schedule": schedule})
    assert job_from_row(_row(job)).schedule == schedule
