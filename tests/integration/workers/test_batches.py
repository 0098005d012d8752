"""HeartbeatJobs, CompleteJobs and FailJobs: many items per call, a status per item."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import code_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running
from tests.integration.api.helpers import field_violations
from tests.integration.workers.helpers import attempts, enqueue, get, lease, seconds, struct, value

MAX_BATCH = 1000  # worker_service.proto
MAX_RELEASED_ATTEMPTS = 10  # worker_service.proto: uncharged releases per execution


async def test_one_call_completes_many_and_each_item_has_its_status(server: Running) -> None:
    jobs = [await enqueue(server) for _ in range(3)]
    held = await lease(server, "w1", max_jobs=3)
    assert len(held) == 3
    stale = jobs[0].id  # reported twice in one batch: the repeat is refused
    items = [
        wpb.JobCompletion(job_id=h.job.id, epoch=h.epoch, result=value(n=i))
        for i, h in enumerate(held)
    ]
    items += [
        wpb.JobCompletion(job_id="no-such-job", epoch=1),
        wpb.JobCompletion(job_id=stale, epoch=1),
        wpb.JobCompletion(job_id="", epoch=1),
    ]
    resp = await server.workers.CompleteJobs(
        wpb.CompleteJobsRequest(worker_id="w1", completions=items)
    )
    codes = [r.status.code for r in resp.results]
    assert [r.job_id for r in resp.results] == [i.job_id for i in items]
    assert codes == [
        0,
        0,
        0,
        code_pb2.NOT_FOUND,
        code_pb2.INVALID_ARGUMENT,
        code_pb2.INVALID_ARGUMENT,
    ]
    assert resp.results[4].status.reason == "DUPLICATE_ITEM"
    assert resp.results[5].status.message.startswith("completions[5].job_id")
    assert all(r.state == job_pb2.JOB_STATE_COMPLETED for r in resp.results[:3])
    for i, h in enumerate(held):
        done = await get(server, h.job.id)
        assert done.state == job_pb2.JOB_STATE_COMPLETED and done.result.struct_value["n"] == i
        [attempt] = await attempts(server, h.job.id)
        assert attempt.outcome == job_pb2.ATTEMPT_OUTCOME_SUCCEEDED
    # reported again: the lease is over, nothing changes
    again = await server.workers.CompleteJobs(
        wpb.CompleteJobsRequest(worker_id="w1", completions=items[:1])
    )
    status = again.results[0].status
    assert status.code == code_pb2.FAILED_PRECONDITION and status.reason == "LEASE_NOT_HELD"
    assert status.current_state == job_pb2.JOB_STATE_COMPLETED and status.current_epoch == 1


async def test_fencing_holds_per_item(server: Running) -> None:
    enqueued = [await enqueue(server) for _ in range(3)]
    [a] = await lease(server, "w1", max_jobs=1)
    [b] = await lease(server, "w2", max_jobs=1)
    [c] = await lease(server, "w1", max_jobs=1)
    resp = await server.workers.FailJobs(
        wpb.FailJobsRequest(
            worker_id="w1",
            failures=[
                wpb.JobFailure(job_id=a.job.id, epoch=a.epoch, error="IOError: disk"),
                wpb.JobFailure(job_id=b.job.id, epoch=b.epoch, error="not mine"),
                wpb.JobFailure(job_id=c.job.id, epoch=c.epoch + 1, error="stale"),
            ],
        )
    )
    statuses = [r.status for r in resp.results]
    assert statuses[0].code == 0 and resp.results[0].state == job_pb2.JOB_STATE_RETRYING
    assert statuses[1].code == code_pb2.FAILED_PRECONDITION
    assert statuses[1].reason == "LEASE_NOT_HELD"
    assert statuses[2].code == code_pb2.FAILED_PRECONDITION
    assert statuses[2].current_epoch == c.epoch
    final = wpb.JobFailure(job_id=c.job.id, epoch=c.epoch, error="ValueError: x", retryable=False)
    resp = await server.workers.FailJobs(wpb.FailJobsRequest(worker_id="w1", failures=[final]))
    assert resp.results[0].status.code == 0
    assert resp.results[0].state == job_pb2.JOB_STATE_FAILED
    taken = await get(server, b.job.id)
    assert taken.state == job_pb2.JOB_STATE_RUNNING and taken.worker_id == "w2"
    assert (await get(server, a.job.id)).last_error == "IOError: disk"
    assert {j.id for j in enqueued} == {a.job.id, b.job.id, c.job.id}


async def test_heartbeats_extend_many_and_tell_a_cancellation(server: Running) -> None:
    kept, cancelled = await enqueue(server), await enqueue(server)
    held = {h.job.id: h for h in await lease(server, "w1", max_jobs=2, lease=5)}
    await server.jobs.CancelJob(jpb.CancelJobRequest(id=cancelled.id, reason="no longer needed"))
    resp = await server.workers.HeartbeatJobs(
        wpb.HeartbeatJobsRequest(
            worker_id="w1",
            lease_duration=seconds(60),
            heartbeats=[
                wpb.JobHeartbeat(job_id=kept.id, epoch=held[kept.id].epoch, progress=struct(p=1)),
                wpb.JobHeartbeat(job_id=cancelled.id, epoch=held[cancelled.id].epoch),
                wpb.JobHeartbeat(job_id=kept.id, epoch=0),
            ],
        )
    )
    first, second, bad = resp.results
    assert first.status.code == 0 and not first.cancel_requested
    assert first.expire_time.ToSeconds() > held[kept.id].expire_time.ToSeconds() + 30
    assert (await get(server, kept.id)).progress["p"] == 1
    assert second.status.code == 0 and second.cancel_requested
    assert second.cancel_reason == "no longer needed"
    assert bad.status.code == code_pb2.INVALID_ARGUMENT and "epoch" in bad.status.message


@pytest.mark.parametrize(
    ("method", "field", "item"),
    [
        ("HeartbeatJobs", "heartbeats", wpb.JobHeartbeat(job_id="j", epoch=1)),
        ("CompleteJobs", "completions", wpb.JobCompletion(job_id="j", epoch=1)),
        ("FailJobs", "failures", wpb.JobFailure(job_id="j", epoch=1)),
        ("ReleaseJobs", "releases", wpb.JobRelease(job_id="j", epoch=1)),
    ],
)
async def test_batch_limits(server: Running, method: str, field: str, item: object) -> None:
    call = getattr(server.workers, method)
    request_type = {
        "HeartbeatJobs": wpb.HeartbeatJobsRequest,
        "CompleteJobs": wpb.CompleteJobsRequest,
        "FailJobs": wpb.FailJobsRequest,
        "ReleaseJobs": wpb.ReleaseJobsRequest,
    }[method]

    def items(n: int) -> list[object]:
        out = []
        for i in range(n):
            copy = type(item)()
            copy.CopyFrom(item)  # type: ignore[attr-defined]
            copy.job_id = f"job-{i}"  # type: ignore[attr-defined]
            out.append(copy)
        return out

    # at the limit: answered item by item (here: no such jobs)
    resp = await call(request_type(worker_id="w1", **{field: items(MAX_BATCH)}))
    assert len(resp.results) == MAX_BATCH
    assert {r.status.code for r in resp.results} == {code_pb2.NOT_FOUND}
    # one past it, none at all, or no worker id: the whole call is refused
    for bad, where in [
        (request_type(worker_id="w1", **{field: items(MAX_BATCH + 1)}), field),
        (request_type(worker_id="w1"), field),
        (request_type(**{field: items(1)}), "worker_id"),
        (request_type(worker_id="inprocess@x", **{field: items(1)}), "worker_id"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert where in field_violations(err.value)


async def test_garbage_items_fail_alone(server: Running) -> None:
    await enqueue(server)
    [held] = await lease(server, "w1")
    not_json = struct_pb2.Value(number_value=float("nan"))  # JSON has no NaN
    resp = await server.workers.CompleteJobs(
        wpb.CompleteJobsRequest(
            worker_id="w1",
            completions=[
                wpb.JobCompletion(job_id="x" * 65, epoch=1),
                wpb.JobCompletion(job_id="bad\x01id", epoch=1),
                wpb.JobCompletion(job_id="y", epoch=-3),
                wpb.JobCompletion(job_id="z", epoch=1, result=not_json),
                wpb.JobCompletion(job_id=held.job.id, epoch=held.epoch),
            ],
        )
    )
    codes = [r.status.code for r in resp.results]
    assert codes == [code_pb2.INVALID_ARGUMENT] * 4 + [0]
    failed = await server.workers.FailJobs(
        wpb.FailJobsRequest(
            worker_id="w1",
            failures=[
                wpb.JobFailure(job_id="a", epoch=1, retry_after=seconds(367 * 86_400)),
                wpb.JobFailure(job_id="b", epoch=1, error="\x00" * 20_000),
            ],
        )
    )
    assert failed.results[0].status.code == code_pb2.INVALID_ARGUMENT
    assert "retry_after" in failed.results[0].status.message
    assert failed.results[1].status.code == code_pb2.NOT_FOUND  # the text is cut, not refused


async def test_released_jobs_run_again_without_using_an_attempt(server: Running) -> None:
    first, second = await enqueue(server), await enqueue(server)
    held = {h.job.id: h for h in await lease(server, "w1", max_jobs=2)}
    reason = "deploy " + "x" * 2000  # cut to 1,024 characters, not refused
    resp = await server.workers.ReleaseJobs(
        wpb.ReleaseJobsRequest(
            worker_id="w1",
            reason=reason,
            releases=[
                wpb.JobRelease(job_id=first.id, epoch=held[first.id].epoch),
                wpb.JobRelease(job_id=second.id, epoch=held[second.id].epoch + 1),
                wpb.JobRelease(job_id=first.id, epoch=held[first.id].epoch),
                wpb.JobRelease(job_id="", epoch=1),
            ],
        )
    )
    statuses = [r.status for r in resp.results]
    assert statuses[0].code == 0 and resp.results[0].state == job_pb2.JOB_STATE_QUEUED
    assert statuses[1].code == code_pb2.FAILED_PRECONDITION
    assert statuses[1].reason == "LEASE_NOT_HELD"
    assert statuses[2].reason == "DUPLICATE_ITEM"
    assert statuses[3].code == code_pb2.INVALID_ARGUMENT
    again = await get(server, first.id)
    assert again.state == job_pb2.JOB_STATE_QUEUED and not again.worker_id
    assert again.last_error.startswith("LostAttempt: released by the worker: deploy xxx")
    assert len(again.last_error) <= len("LostAttempt: released by the worker: ") + 1024
    [attempt] = await attempts(server, first.id)
    assert attempt.outcome == job_pb2.ATTEMPT_OUTCOME_LOST
    # not charged: a job of max_attempts 1 that is released still runs, again and again
    one = await enqueue(server, retry_policy=job_pb2.RetryPolicy(max_attempts=1))
    for _ in range(3):
        [h] = [h for h in await lease(server, "w2", max_jobs=5) if h.job.id == one.id]
        resp = await server.workers.ReleaseJobs(
            wpb.ReleaseJobsRequest(
                worker_id="w2", releases=[wpb.JobRelease(job_id=one.id, epoch=h.epoch)]
            )
        )
        assert resp.results[0].state == job_pb2.JOB_STATE_QUEUED
    [h] = [h for h in await lease(server, "w2", max_jobs=5) if h.job.id == one.id]
    done = await server.workers.CompleteJobs(
        wpb.CompleteJobsRequest(
            worker_id="w2", completions=[wpb.JobCompletion(job_id=one.id, epoch=h.epoch)]
        )
    )
    assert done.results[0].state == job_pb2.JOB_STATE_COMPLETED
    assert len(await attempts(server, one.id)) == 4


async def test_releases_past_the_cap_are_charged(server: Running) -> None:
    """A worker handing a job back again and again: the first MAX_RELEASED_ATTEMPTS releases
    of the execution are free, the next one is charged (with max_attempts 1: FAILED)."""
    one = await enqueue(server, retry_policy=job_pb2.RetryPolicy(max_attempts=1))

    async def release() -> wpb.JobReportResult:
        [h] = await lease(server, "w1")
        resp = await server.workers.ReleaseJobs(
            wpb.ReleaseJobsRequest(
                worker_id="w1", releases=[wpb.JobRelease(job_id=one.id, epoch=h.epoch)]
            )
        )
        return resp.results[0]

    for _ in range(MAX_RELEASED_ATTEMPTS):  # up to the cap: queued again, uncharged
        at_cap = await release()
        assert at_cap.status.code == 0 and at_cap.state == job_pb2.JOB_STATE_QUEUED
    past = await release()
    assert past.status.code == 0 and past.state == job_pb2.JOB_STATE_FAILED
    job = await get(server, one.id)
    assert job.attempt == MAX_RELEASED_ATTEMPTS + 1
    assert "charged: released more than 10 times" in job.last_error
    tried = await attempts(server, one.id)
    assert len(tried) == MAX_RELEASED_ATTEMPTS + 1
    assert all(a.outcome == job_pb2.ATTEMPT_OUTCOME_LOST for a in tried)
