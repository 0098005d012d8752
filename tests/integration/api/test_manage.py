"""Cancel, retry, pause, resume, trigger, delete: one job and in bulk."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.server.clock import FakeClock
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running, running_server
from tests.integration.api.helpers import field_violations
from tests.integration.api.waiting import until, wait_for_state


def in_an_hour() -> j.Schedule:
    at = timestamp_pb2.Timestamp()
    at.FromSeconds(int(time.time()) + 3600)
    return j.Schedule(start_time=at)


async def enqueue(server: Running, **kw: object) -> j.Job:
    return (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(**kw))).job  # type: ignore[arg-type]


async def get(server: Running, job_id: str) -> j.Job:
    return (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job


async def precondition(call: object) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
    assert status is not None
    detail = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(detail)
    return detail


async def test_cancel_a_waiting_job_with_a_reason(server: Running) -> None:
    job = await enqueue(server, task="report", schedule=in_an_hour())
    done = (await server.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="campaign over"))).job
    assert done.state == j.JOB_STATE_CANCELLED and done.cancel_reason == "campaign over"
    assert done.HasField("end_time") and not done.HasField("next_run_time")
    info = await precondition(server.jobs.CancelJob(pb.CancelJobRequest(id=job.id)))
    assert info.reason == "ILLEGAL_TRANSITION"
    assert info.metadata["current_state"] == "JOB_STATE_CANCELLED"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await server.jobs.CancelJob(pb.CancelJobRequest(id="no-such-job"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_a_running_in_process_job(server: Running) -> None:
    job = await enqueue(server, task="test.hang")
    await wait_for_state(server.jobs, job.id, (j.JOB_STATE_RUNNING,))
    await server.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="stop"))
    dispatcher = server.app.engine.dispatcher if server.app.engine else None
    assert dispatcher is not None

    async def let_go() -> bool:  # the handler was cancelled and its ending stored (or not)
        return not dispatcher.holds(job.id)

    await until(server, let_go)  # and nothing brought the job back
    after = await get(server, job.id)
    assert after.state == j.JOB_STATE_CANCELLED
    history = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
    [attempt] = history.attempts
    assert attempt.outcome == j.ATTEMPT_OUTCOME_CANCELLED and attempt.error == "Cancelled: stop"
    assert server.app.engine is not None and not server.app.engine.dispatcher.holds(job.id)


async def test_retry_a_failed_job_keeps_its_history(server: Running) -> None:
    job = await enqueue(server, task="test.boom", retry_policy=j.RetryPolicy(max_attempts=1))
    await wait_for_state(server.jobs, job.id)
    again = (await server.jobs.RetryJob(pb.RetryJobRequest(id=job.id))).job
    assert again.state == j.JOB_STATE_QUEUED
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == j.JOB_STATE_FAILED and done.execution_count == 2
    history = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
    assert [(a.execution, a.number) for a in history.attempts] == [(1, 1), (2, 1)]
    assert history.failed_executions == 2
    later = (
        await server.jobs.RetryJob(
            pb.RetryJobRequest(id=job.id, delay=duration_pb2.Duration(seconds=600))
        )
    ).job
    assert later.state == j.JOB_STATE_SCHEDULED
    assert later.next_run_time.seconds >= time.time() + 590
    await precondition(server.jobs.RetryJob(pb.RetryJobRequest(id=job.id)))


async def test_pause_resume_and_trigger(server: Running) -> None:
    job = await enqueue(server, task="test.echo", schedule=in_an_hour())
    paused = (await server.jobs.PauseJob(pb.PauseJobRequest(id=job.id))).job
    assert paused.state == j.JOB_STATE_PAUSED
    await precondition(server.jobs.PauseJob(pb.PauseJobRequest(id=job.id)))
    await precondition(server.jobs.TriggerJob(pb.TriggerJobRequest(id=job.id)))
    resumed = (await server.jobs.ResumeJob(pb.ResumeJobRequest(id=job.id))).job
    assert resumed.state == j.JOB_STATE_SCHEDULED
    assert resumed.next_run_time == job.next_run_time
    triggered = (await server.jobs.TriggerJob(pb.TriggerJobRequest(id=job.id))).job
    assert triggered.state == j.JOB_STATE_QUEUED
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == j.JOB_STATE_COMPLETED


async def test_delete(server: Running) -> None:
    job = await enqueue(server, task="test.echo")
    await wait_for_state(server.jobs, job.id)
    await server.jobs.DeleteJob(pb.DeleteJobRequest(id=job.id))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await get(server, job.id)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert server.app.store is not None  # the attempts went with it
    assert await server.app.store.list_attempts(job.id, limit=10) == []
    running = await enqueue(server, task="test.hang")
    await wait_for_state(server.jobs, running.id, (j.JOB_STATE_RUNNING,))
    info2 = await precondition(server.jobs.DeleteJob(pb.DeleteJobRequest(id=running.id)))
    assert info2.metadata["current_state"] == "JOB_STATE_RUNNING"


async def test_bulk_actions_in_batches_and_repeatable(server: Running) -> None:
    reqs = [
        pb.EnqueueJobRequest(task="nobody", labels={"batch": "b1"}, schedule=in_an_hour())
        for _ in range(2500)
    ]
    await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    other = await enqueue(server, task="nobody", schedule=in_an_hour())
    flt = j.JobFilter(labels={"batch": "b1"})
    assert (await server.jobs.PauseJobs(pb.PauseJobsRequest(filter=flt))).count == 2500
    assert (await server.jobs.PauseJobs(pb.PauseJobsRequest(filter=flt))).count == 0
    assert (await server.jobs.ResumeJobs(pb.ResumeJobsRequest(filter=flt))).count == 2500
    cancelled = await server.jobs.CancelJobs(pb.CancelJobsRequest(filter=flt, reason="bulk"))
    assert cancelled.count == 2500
    assert (await get(server, other.id)).state == j.JOB_STATE_SCHEDULED
    retried = await server.jobs.RetryJobs(
        pb.RetryJobsRequest(filter=flt, delay=duration_pb2.Duration(seconds=3600))
    )
    assert retried.count == 2500
    assert (await server.jobs.DeleteJobs(pb.DeleteJobsRequest(filter=flt))).count == 2500
    assert (await server.jobs.DeleteJobs(pb.DeleteJobsRequest(filter=flt))).count == 0
    left = await server.jobs.ListJobs(pb.ListJobsRequest(page_size=10))
    assert [x.id for x in left.jobs] == [other.id]


async def test_bulk_refuses_an_empty_filter(server: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.DeleteJobs(pb.DeleteJobsRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter" in field_violations(info.value)


async def test_retention_prunes_finished_jobs_with_their_attempts(server: Running) -> None:
    done = await enqueue(server, task="test.echo")
    await wait_for_state(server.jobs, done.id)
    waiting = await enqueue(server, task="report", schedule=in_an_hour())
    store = server.app.store
    assert store is not None
    assert await store.prune_finished(time.time_ns() // 1000 + 1_000_000) == 1
    with pytest.raises(grpc.aio.AioRpcError):
        await get(server, done.id)
    assert await store.list_attempts(done.id, limit=10) == []
    assert (await get(server, waiting.id)).state == j.JOB_STATE_SCHEDULED


async def test_idempotency_key_expires_after_its_window(db_url: str) -> None:
    clock = FakeClock(time.time_ns() // 1000)
    async with running_server(db_url, clock, idempotency_window=0.3) as server:
        req = pb.EnqueueJobRequest(task="nobody", idempotency_key="k")
        first = await server.jobs.EnqueueJob(req)
        assert (await server.jobs.EnqueueJob(req)).already_exists
        clock.advance(299_000)
        assert (await server.jobs.EnqueueJob(req)).already_exists
        clock.advance(2_000)
        later = await server.jobs.EnqueueJob(req)
        assert not later.already_exists and later.job.id != first.job.id
