"""Event log snapshots: compact (fields at their default left out), the same document whether
built one job at a time or for a batch of new jobs, and readable by readers that expect the
full form."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server.model import HttpTarget, Job, JobState
from jobwheel.server.storage.convert import (
    http_to_doc,
    job_from_new,
    job_from_snapshot,
    job_snapshot,
    new_job_snapshot_tails,
    new_job_snapshots,
    retry_to_doc,
    schedule_to_doc,
)
from jobwheel.server.storage.dialect import dumps, dumps_floatless

from tests.integration.storage.factories import full_job, new_job


def _created() -> list[Job]:
    jobs = [
        job_from_new(new_job(), seq=1),
        job_from_new(new_job(labels={"a": "b"}, idempotency_key="k"), seq=2),
        job_from_new(full_job(), seq=3),
        job_from_new(new_job(http=HttpTarget("https://example.com/h", "PUT", {"X": "1"})), seq=4),
        job_from_new(new_job(), seq=5),  # shares the first one's encoded part
    ]
    return jobs


def test_batch_snapshots_equal_one_at_a_time() -> None:
    jobs = _created()
    for job, text in zip(jobs, new_job_snapshots(jobs), strict=True):
        assert json.loads(text) == json.loads(job_snapshot(job))


def test_snapshots_leave_defaults_out_and_read_back_whole() -> None:
    job = _created()[2]
    running = dataclasses.replace(
        job,
        state=JobState.RUNNING,
        attempt=2,
        execution_count=1,
        start_time=job.create_time + 5,
        worker_id="w1",
        result={"ok": True},
        traceparent="",
    )
    fresh = dataclasses.replace(_created()[0], traceparent="")
    for original in (fresh, running):
        doc = json.loads(job_snapshot(original))
        assert job_from_snapshot(job_snapshot(original), original.payload) == original
        # readers before compact snapshots index these keys directly
        assert {"schedule", "retry_policy", "http", "state", "id", "seq"} <= doc.keys()
    assert "attempt" not in json.loads(job_snapshot(fresh))
    assert json.loads(job_snapshot(running))["attempt"] == 2


def test_full_snapshots_written_before_still_read() -> None:
    job = dataclasses.replace(_created()[1], traceparent="")
    full = json.loads(job_snapshot(job))
    for field in dataclasses.fields(Job):
        if field.name not in ("payload", "traceparent") and field.name not in full:
            full[field.name] = getattr(job, field.name)
    assert job_from_snapshot(json.dumps(full), job.payload) == job


def _document(job: Job) -> dict[str, object]:
    """The snapshot's document as first defined: every field but the payload and the trace
    context, those past the required ones only when not at their default."""
    doc: dict[str, object] = {}
    for f in dataclasses.fields(Job):
        if f.name in ("payload", "traceparent"):
            continue
        value = getattr(job, f.name)
        optional = f.default is not dataclasses.MISSING
        if optional and value == f.default and type(value) is type(f.default):
            continue
        doc[f.name] = value
    doc["schedule"] = None if job.schedule is None else schedule_to_doc(job.schedule)
    doc["retry_policy"] = retry_to_doc(job.retry_policy)
    doc["http"] = None if job.http is None else http_to_doc(job.http)
    return doc


def test_a_snapshot_is_the_one_encoding_of_its_document() -> None:
    base = _created()[2]
    jobs = [
        *_created(),
        dataclasses.replace(
            base,
            state=JobState.FAILED,
            attempt=3,
            execution_count=2,
            released_attempts=1,
            start_time=base.create_time + 1,
            end_time=base.create_time + 2,
            last_error='ValueError: "bad" \u00e9 ☃',
            result={"z": [1.5, None, True], "a": "grüße"},
            cancel_reason="stop",
            skipped_count=4,
            progress={"done": 0.5},
            worker_id="wé",
            lease_expire_time=base.create_time + 3,
        ),
        dataclasses.replace(base, result=0),  # a default's value of another type is kept
        dataclasses.replace(base, result=False, last_error="", progress={}),
    ]
    for job in jobs:
        assert job_snapshot(job) == dumps(_document(job))


# any text (control characters, quotes, non-BMP) but lone surrogates, ints within 64 bits:
# what orjson writes (the test below has the rest)
_TEXT = st.text(max_size=12)
_INT = st.integers(-(2**63), 2**63 - 1)
# floats orjson spells otherwise (1e-05 as 0.00001) among any others
_FLOAT = st.floats(allow_nan=False, allow_infinity=False) | st.floats(1e-9, 1e-4)
_DOCUMENT = st.recursive(
    st.none() | st.booleans() | _INT | _FLOAT | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(
    texts=st.fixed_dictionaries(
        {
            name: _TEXT
            for name in ("id", "queue", "task", "last_error", "cancel_reason", "worker_id")
        }
    ),
    ints=st.fixed_dictionaries(
        {
            name: _INT
            for name in ("priority", "create_time", "update_time", "attempt", "skipped_count")
        }
    ),
    optional=st.fixed_dictionaries(
        {
            name: st.none() | _INT
            for name in ("timeout", "next_run_time", "start_time", "end_time", "seq")
        }
    ),
    labels=st.dictionaries(_TEXT, _TEXT, max_size=3),
    key=st.none() | _TEXT,
    result=_DOCUMENT,
    progress=st.none() | st.dictionaries(_TEXT, _DOCUMENT, max_size=3),
    state=st.sampled_from(JobState),
    shape=st.integers(0, 4),
)
def test_any_job_snapshot_is_the_one_encoding_of_its_document(
    texts: dict[str, str],
    ints: dict[str, int],
    optional: dict[str, int | None],
    labels: dict[str, str],
    key: str | None,
    result: Any,
    progress: dict[str, Any] | None,
    state: JobState,
    shape: int,
) -> None:
    job = dataclasses.replace(
        _created()[shape],
        **texts,
        **ints,
        **{name: value for name, value in optional.items() if name != "seq" or value is not None},
        labels=labels,
        idempotency_key=key,
        result=result,
        progress=progress,
        state=state,
    )
    assert job_snapshot(job) == dumps(_document(job))


def test_what_orjson_refuses_is_written_member_by_member() -> None:
    base = _created()[2]
    for job in (
        dataclasses.replace(base, last_error="bad \udcff byte"),  # a lone surrogate
        dataclasses.replace(base, priority=2**64),
        dataclasses.replace(base, result={"big": -(2**70), "small": 1e-05}),
        dataclasses.replace(base, progress={"\ud800": 1}),
    ):
        assert job_snapshot(job) == dumps(_document(job))


def test_new_job_snapshots_of_what_orjson_refuses() -> None:
    base = _created()[2]
    for job in (
        dataclasses.replace(base, priority=2**64),
        dataclasses.replace(base, task="bad \udcff byte"),  # a lone surrogate
        base,
    ):
        [text] = new_job_snapshots([job])
        assert json.loads(text) == _document(job)


def test_snapshot_tails_rebuild_the_batch_snapshots() -> None:
    jobs = _created()
    alike = [
        job_from_new(new_job(create_time=t, next_run_time=t), seq=s)
        for s, t in enumerate([1, 1, 2, 2, 2, 1], 1)
    ]
    for batch, flag in ((jobs, False), (alike, False), (alike, True)):
        tails = [tail for n, tail in new_job_snapshot_tails(batch, alike=flag) for _ in range(n)]
        texts = [
            f'{{"id":{dumps_floatless(job.id)},"idempotency_key":'
            f"{'null' if job.idempotency_key is None else dumps_floatless(job.idempotency_key)},"
            f'"labels":{dumps_floatless(job.labels) if job.labels else "{}"},"seq":{job.seq}{tail}'
            for job, tail in zip(batch, tails, strict=True)
        ]
        assert texts == new_job_snapshots(batch)
    assert len(new_job_snapshot_tails(alike, alike=True)) == 3
