"""Failed attempts keep their exception type, message and bounded traceback, and each one is
logged once."""

from __future__ import annotations

import logging

import pytest
from google.protobuf import duration_pb2, struct_pb2
from jobwheel.server import failures
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running
from tests.integration.api.waiting import wait_for_state

RETRY_TWICE = job_pb2.RetryPolicy(
    max_attempts=2, initial_backoff=duration_pb2.Duration(nanos=10_000_000), jitter=0.0
)


def _records(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "job_id", None) == job_id]


async def test_in_process_failure_keeps_type_message_and_traceback(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobwheel.server.attempts")
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="test.boom", retry_policy=RETRY_TWICE)
        )
    ).job
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.last_error == "ValueError: boom"
    assert done.last_error_type == "ValueError"
    tb = done.last_error_traceback
    assert tb.startswith("Traceback (most recent call last):")
    assert 'raise ValueError("boom")' in tb and "tests/handlers.py" in tb
    assert tb.rstrip().endswith("ValueError: boom")
    assert "asyncio" not in tb  # the frames that call the handler are left out

    history = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
    assert [a.error for a in history.attempts] == ["ValueError: boom"] * 2
    assert [a.error_type for a in history.attempts] == ["ValueError"] * 2
    assert all(a.traceback == tb for a in history.attempts)

    records = _records(caplog, job.id)
    assert [r.attempt for r in records] == [1, 2]  # type: ignore[attr-defined]
    for record in records:
        assert record.task == "test.boom" and record.queue == "default"  # type: ignore[attr-defined]
        text = record.getMessage()
        assert job.id in text and "test.boom" in text and text.endswith("ValueError: boom")
        assert record.exc_text == tb and record.error_type == "ValueError"  # type: ignore[attr-defined]
    assert "will retry" in records[0].getMessage()
    assert "no retry" in records[1].getMessage()


async def boom_once(server: Running, **payload: object) -> tuple[job_pb2.Job, job_pb2.Job]:
    """A test.deep_boom job with one attempt, as enqueued and as it ended."""
    doc = struct_pb2.Struct()
    doc.update(payload)
    request = pb.EnqueueJobRequest(
        task="test.deep_boom", payload=doc, retry_policy=job_pb2.RetryPolicy(max_attempts=1)
    )
    job = (await server.jobs.EnqueueJob(request)).job
    return job, await wait_for_state(server.jobs, job.id)


async def test_traceback_and_message_are_bounded(server: Running) -> None:
    job, done = await boom_once(server, depth=500, size=100_000)
    assert done.last_error == "RuntimeError: wrapped"
    tb = done.last_error_traceback
    assert len(tb) <= failures.MAX_TRACEBACK
    assert tb.startswith("Traceback") and tb.endswith("RuntimeError: wrapped")
    # 500 nested calls: the innermost 30 frames are kept (Python folds the repeated ones)
    assert "in down" in tb and "Previous line repeated 26 more times" in tb
    # the cause's 100,000-character message is cut to one bounded line
    [key_error] = [line for line in tb.splitlines() if line.startswith("KeyError: ")]
    assert len(key_error) < failures.MAX_LINE and key_error.endswith("…")
    assert "The above exception was the direct cause" in tb  # the chained KeyError is kept
    # the innermost frames are kept: the handler's frame raising the wrapper is the last one
    assert 'raise RuntimeError("wrapped") from exc' in tb
    [attempt] = (
        await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
    ).attempts
    assert attempt.traceback == tb and attempt.error_type == "RuntimeError"


async def test_huge_message_is_cut(server: Running) -> None:
    _, done = await boom_once(server, depth=0, size=100_000, wrap=False)
    assert len(done.last_error) == failures.MAX_SUMMARY
    assert done.last_error.startswith("KeyError: 'xxx") and done.last_error.endswith("…")
    assert done.last_error_type == "KeyError"
    assert len(done.last_error_traceback) <= failures.MAX_TRACEBACK


async def test_remote_failure_with_a_traceback_is_split_and_logged(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jobwheel.server.attempts")
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="remote.work", retry_policy=RETRY_TWICE)
        )
    ).job
    [lease] = (await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w1"))).leases
    text = (
        "KeyError: 'id'\n\nTraceback (most recent call last):\n"
        '  File "w.py", line 3\n'
        "KeyError: 'id'"
    )
    failed = (
        await server.workers.FailJob(
            wpb.FailJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1", error=text)
        )
    ).job
    assert failed.state == job_pb2.JOB_STATE_RETRYING
    assert failed.last_error == "KeyError: 'id'" and failed.last_error_type == "KeyError"
    assert failed.last_error_traceback.startswith("Traceback (most recent call last):")
    [record] = _records(caplog, job.id)
    assert record.attempt == 1 and record.task == "remote.work"  # type: ignore[attr-defined]
