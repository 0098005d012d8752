"""The lease epoch fences reports across executions too: every lease of a job raises it, while
the attempt number starts again at each execution (a retry after a cancel, a recurring job's
next occurrence). A report kept from an earlier lease, even by the same worker id, changes
nothing."""

from __future__ import annotations

import grpc
import pytest
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import (
    attempts,
    enqueue,
    error_info,
    get,
    lease,
    seconds,
    value,
)


async def test_a_report_from_before_a_retry_is_refused(server: Running) -> None:
    job = await enqueue(server)
    [old] = await lease(server, "w1")
    await server.jobs.CancelJob(jpb.CancelJobRequest(id=job.id, reason="operator"))
    await server.jobs.RetryJob(jpb.RetryJobRequest(id=job.id))
    [new] = await lease(server, "w1")  # the same worker process, another slot
    assert new.job.id == job.id and new.job.attempt == old.job.attempt == 1
    assert new.epoch == old.epoch + 1
    # the first slot never heard of the cancel: its completion is for a lease long gone
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.CompleteJob(
            wpb.CompleteJobRequest(
                job_id=job.id, epoch=old.epoch, worker_id="w1", result=value(by="old")
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err.value)
    assert info.reason == "LEASE_NOT_HELD"
    assert info.metadata["current_epoch"] == str(new.epoch)
    assert (await get(server, job.id)).state == job_pb2.JOB_STATE_RUNNING
    # its heartbeat is refused alike; the new slot's completion goes through
    with pytest.raises(grpc.aio.AioRpcError):
        await server.workers.HeartbeatJob(
            wpb.HeartbeatJobRequest(job_id=job.id, epoch=old.epoch, worker_id="w1")
        )
    await server.workers.CompleteJob(
        wpb.CompleteJobRequest(job_id=job.id, epoch=new.epoch, worker_id="w1", result=value(n=2))
    )
    done = await get(server, job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert done.result.struct_value["n"] == 2


async def test_a_repeated_completion_does_not_complete_the_next_occurrence(
    server: Running,
) -> None:
    # a CompleteJob sent again (its reply was lost) must not end the recurring job's next
    # execution, which nobody has run yet
    job = await enqueue(server, schedule=job_pb2.Schedule(interval=seconds(1)))
    await wait_for_state(server.jobs, job.id, (job_pb2.JOB_STATE_QUEUED,), within=10)
    [first] = await lease(server, "w1")
    done = wpb.CompleteJobRequest(
        job_id=job.id, epoch=first.epoch, worker_id="w1", result=value(run=1)
    )
    await server.workers.CompleteJob(done)
    [second] = await lease(server, "w1", wait=10)  # the next occurrence
    assert second.job.id == job.id and second.job.execution_count == 2
    assert (second.job.attempt, second.epoch) == (1, first.epoch + 1)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.CompleteJob(done)  # the first report, again
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    now = await get(server, job.id)
    assert now.state == job_pb2.JOB_STATE_RUNNING and now.execution_count == 2
    history = await attempts(server, job.id)
    assert [(a.execution, a.number, a.outcome) for a in history] == [
        (1, 1, job_pb2.ATTEMPT_OUTCOME_SUCCEEDED),
        (2, 1, job_pb2.ATTEMPT_OUTCOME_RUNNING),
    ]
