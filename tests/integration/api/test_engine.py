"""The engine end to end: in-process handlers, retries, timeouts, priorities, schedules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

import tests.handlers as handlers
from tests.conftest import Running, running_server
from tests.integration.api.waiting import wait_for_state

FAST_RETRY = job_pb2.RetryPolicy(
    max_attempts=3,
    initial_backoff=duration_pb2.Duration(nanos=20_000_000),
    max_backoff=duration_pb2.Duration(nanos=50_000_000),
    jitter=0.0,
)


def payload(**fields: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


async def enqueue(server: Running, **kw: object) -> job_pb2.Job:
    return (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(**kw))).job  # type: ignore[arg-type]


async def attempts(server: Running, job_id: str) -> pb.ListJobAttemptsResponse:
    return await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))


async def test_async_handler_result_becomes_the_jobs_result(server: Running) -> None:
    job = await enqueue(server, task="test.echo", payload=payload(x=1))
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert done.result.struct_value["echo"]["x"] == 1
    assert done.attempt == 1 and done.execution_count == 1
    assert done.HasField("start_time") and done.HasField("end_time")
    history = await attempts(server, job.id)
    [attempt] = history.attempts
    assert attempt.outcome == job_pb2.ATTEMPT_OUTCOME_SUCCEEDED
    assert attempt.number == 1 and attempt.execution == 1
    assert attempt.worker_id.startswith("inprocess@")
    assert history.total_executions == 1 and history.successful_executions == 1


async def test_raising_handler_retries_then_fails(server: Running) -> None:
    job = await enqueue(server, task="test.boom", retry_policy=FAST_RETRY)
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.last_error == "ValueError: boom"
    assert done.attempt == 3
    history = await attempts(server, job.id)
    assert [a.number for a in history.attempts] == [1, 2, 3]
    assert {a.outcome for a in history.attempts} == {job_pb2.ATTEMPT_OUTCOME_FAILED}
    assert all(a.error == "ValueError: boom" for a in history.attempts)
    assert history.failed_executions == 1 and history.successful_executions == 0
    # backoff respected: each retry starts at least initial_backoff after the previous end
    for before, after in zip(history.attempts, history.attempts[1:], strict=False):
        gap = after.start_time.ToMicroseconds() - before.end_time.ToMicroseconds()
        assert gap >= 20_000


async def test_flaky_handler_succeeds_on_a_retry(server: Running) -> None:
    job = await enqueue(
        server, task="test.flaky", payload=payload(succeed_on=2), retry_policy=FAST_RETRY
    )
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED and done.result.number_value == 2
    assert done.last_error == "RuntimeError: attempt 1 fails"


async def test_hanging_handler_times_out(server: Running) -> None:
    job = await enqueue(
        server,
        task="test.hang",
        timeout=duration_pb2.Duration(nanos=100_000_000),
        retry_policy=job_pb2.RetryPolicy(max_attempts=2, initial_backoff=duration_pb2.Duration()),
    )
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.last_error.startswith("TimeoutError")
    history = await attempts(server, job.id)
    assert [a.outcome for a in history.attempts] == [job_pb2.ATTEMPT_OUTCOME_TIMED_OUT] * 2
    assert all(a.duration.ToMilliseconds() >= 100 for a in history.attempts)


@pytest.mark.parametrize("limit", [None, duration_pb2.Duration(seconds=30)])
async def test_a_handlers_own_timeout_error_is_its_failure(
    server: Running, limit: duration_pb2.Duration | None
) -> None:
    job = await enqueue(
        server,
        task="test.own_timeout",
        timeout=limit,
        retry_policy=job_pb2.RetryPolicy(max_attempts=1),
    )
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.last_error.startswith("TimeoutError: the upstream call timed out")
    [attempt] = (await attempts(server, job.id)).attempts
    assert attempt.outcome == job_pb2.ATTEMPT_OUTCOME_FAILED


async def test_blocking_sync_handler_does_not_stall_the_loop(server: Running) -> None:
    slow = await enqueue(server, task="test.block", payload=payload(seconds=3.0))
    await wait_for_state(server.jobs, slow.id, (job_pb2.JOB_STATE_RUNNING,))
    fast = await enqueue(server, task="test.echo")
    fast_done = await wait_for_state(server.jobs, fast.id)
    # the async job ran to its end while the sync handler still slept in its thread
    still = (await server.jobs.GetJob(pb.GetJobRequest(id=slow.id))).job
    assert fast_done.state == job_pb2.JOB_STATE_COMPLETED
    assert still.state == job_pb2.JOB_STATE_RUNNING
    done = await wait_for_state(server.jobs, slow.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED and done.result.string_value == "slept"


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("object", "is not JSON-serialisable"),
        ("nan", "is not JSON-serialisable: Out of range float values"),
        ("deep", "result nests deeper than 20 levels"),  # the API's rule for documents
        ("deeper_than_python", "is not JSON-serialisable: maximum recursion depth"),
        ("nul", "result has a key holding U+0000"),
    ],
)
async def test_result_that_cannot_be_stored_fails_the_attempt(
    server: Running, kind: str, why: str
) -> None:
    # a result stored 150 levels deep made every later read of the job fail (INTERNAL)
    job = await enqueue(
        server,
        task="test.not_json",
        payload={"kind": kind},
        retry_policy=job_pb2.RetryPolicy(max_attempts=1),
    )
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.last_error.startswith("ResultError: ") and why in done.last_error
    listed = await server.jobs.ListJobs(pb.ListJobsRequest())
    assert job.id in [j.id for j in listed.jobs]


async def test_an_error_holding_u0000_is_stored_with_u_fffd(server: Running) -> None:
    # PostgreSQL cannot store U+0000: the ending failed, the job stayed RUNNING until its
    # lease ran out, and the error was never kept
    job = await enqueue(
        server, task="test.nul_error", retry_policy=job_pb2.RetryPolicy(max_attempts=1)
    )
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.last_error == "ValueError: before\ufffdafter"


async def test_job_without_a_handler_waits_queued(server: Running) -> None:
    job = await enqueue(server, task="nobody.handles.this")
    other = await enqueue(server, task="test.echo")
    await wait_for_state(server.jobs, other.id)  # dispatch cycles came and went
    got = (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_QUEUED and got.attempt == 0


async def test_scheduled_job_fires_on_time_never_early(server: Running) -> None:
    at = timestamp_pb2.Timestamp()
    at.FromMicroseconds(int(time.time() * 1e6) + 300_000)
    job = await enqueue(server, task="test.echo", schedule=job_pb2.Schedule(start_time=at))
    assert job.state == job_pb2.JOB_STATE_SCHEDULED
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    lateness = done.start_time.ToMicroseconds() - at.ToMicroseconds()
    assert 0 <= lateness < 2_000_000


async def test_interval_job_runs_repeatedly_up_to_its_limit(server: Running) -> None:
    job = await enqueue(
        server,
        task="test.echo",
        schedule=job_pb2.Schedule(interval=duration_pb2.Duration(seconds=1), limit=2),
    )
    assert job.recurring and job.state == job_pb2.JOB_STATE_SCHEDULED
    done = await wait_for_state(server.jobs, job.id, within=10)
    assert done.state == job_pb2.JOB_STATE_COMPLETED and done.execution_count == 2
    history = await attempts(server, job.id)
    assert [a.execution for a in history.attempts] == [1, 2]


@pytest.fixture
async def one_at_a_time(db_url: str) -> AsyncIterator[Running]:
    async with running_server(db_url, queue_concurrency=1) as running:
        yield running


async def test_priority_then_fifo_within_a_queue(one_at_a_time: Running, tmp_path: Path) -> None:
    server = one_at_a_time
    release = tmp_path / "release"
    blocker = await enqueue(server, task="test.wait_release", payload=payload(release=str(release)))
    await wait_for_state(server.jobs, blocker.id, (job_pb2.JOB_STATE_RUNNING,))
    handlers.RECORDED.clear()
    order = [(0, 1), (5, 2), (0, 3), (9, 4), (5, 5)]  # (priority, n)
    jobs = [
        await enqueue(server, task="test.record", priority=p, payload=payload(n=n))
        for p, n in order
    ]
    release.touch()
    for job in jobs:
        await wait_for_state(server.jobs, job.id)
    assert handlers.RECORDED == [4, 2, 5, 1, 3]
