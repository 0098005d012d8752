"""Every reply fits a default client's 4 MiB receive limit: pages and batches end early on
size, and one job (payload, result and progress at their limits) always fits."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from jobwheel.server.api.reply_size import MAX_MESSAGE_BYTES
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running
from tests.integration.api.helpers import field_violations
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import error_info

MB = 1_000_000


def blob(size: int, **more: object) -> struct_pb2.Struct:
    """A payload of about `size` bytes encoded."""
    out = struct_pb2.Struct()
    out.update({"blob": "x" * (size - 16), **more})
    return out


async def enqueue_big(
    server: Running, n: int, size: int = MB, task: str = "nobody.takes", **kw: object
) -> list[str]:
    ids = []
    for i in range(n):
        request = pb.EnqueueJobRequest(task=task, payload=blob(size, i=i), **kw)  # type: ignore[arg-type]
        ids.append((await server.jobs.EnqueueJob(request)).job.id)
    return ids


@pytest.mark.parametrize("order", [pb.JOB_ORDER_CREATE_TIME_DESC, pb.JOB_ORDER_CREATE_TIME_ASC])
async def test_list_jobs_pages_end_on_size(server: Running, order: int) -> None:
    big = await enqueue_big(server, 9)
    small = [
        (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody.takes"))).job.id
        for _ in range(3)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        # the test channel keeps gRPC's default 4 MiB receive limit
        reply = await server.jobs.ListJobs(
            pb.ListJobsRequest(page_size=1000, page_token=token, order=order)  # type: ignore[arg-type]
        )
        assert reply.ByteSize() <= MAX_MESSAGE_BYTES and reply.jobs
        seen += [j.id for j in reply.jobs]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    created = big + small
    assert seen == (created if order == pb.JOB_ORDER_CREATE_TIME_ASC else created[::-1])
    assert 3 <= pages <= 4  # about four 1 MB jobs per page, never one job per page


async def test_one_job_at_every_limit_fits(server: Running) -> None:
    """Payload, progress and result of 1 MiB each, plus labels: GetJob still answers."""
    limit = 1 << 20
    payload = blob(limit - 64)
    assert limit - 64 < payload.ByteSize() <= limit
    labels = {f"k{i}": "v" * 256 for i in range(64)}
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="remote.big", payload=payload, labels=labels)
        )
    ).job
    leases = (await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w"))).leases
    epoch = leases[0].epoch
    await server.workers.HeartbeatJob(
        wpb.HeartbeatJobRequest(
            job_id=job.id, epoch=epoch, worker_id="w", progress=blob(limit - 64)
        )
    )
    result = struct_pb2.Value(string_value="r" * (limit - 8))
    await server.workers.CompleteJob(
        wpb.CompleteJobRequest(job_id=job.id, epoch=epoch, worker_id="w", result=result)
    )
    got = (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_COMPLETED
    assert got.ByteSize() > 3 * limit - 1024 and got.ByteSize() < MAX_MESSAGE_BYTES
    listed = await server.jobs.ListJobs(pb.ListJobsRequest())
    assert [j.id for j in listed.jobs] == [job.id]


async def test_list_job_attempts_pages_end_on_size(server: Running) -> None:
    """Six executions each returning a 0.9 MB result: pages of at most four."""
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(
                task="test.big_result",
                payload=blob(100, n=900_000),
                schedule=job_pb2.Schedule(interval=duration_pb2.Duration(seconds=3600)),
            )
        )
    ).job
    for n in range(1, 7):
        await server.jobs.TriggerJob(pb.TriggerJobRequest(id=job.id))
        while True:  # the run may be over before a look finds it RUNNING
            done = (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
            if done.execution_count == n and done.state == job_pb2.JOB_STATE_SCHEDULED:
                break
            await asyncio.sleep(0.02)
    numbers: list[int] = []
    token = ""
    while True:
        reply = await server.jobs.ListJobAttempts(
            pb.ListJobAttemptsRequest(job_id=job.id, page_size=1000, page_token=token)
        )
        assert 1 <= len(reply.attempts) <= 4 and reply.ByteSize() <= MAX_MESSAGE_BYTES
        assert all(len(a.result.string_value) == 900_000 for a in reply.attempts)
        numbers += [a.execution for a in reply.attempts]
        token = reply.next_page_token
        if not token:
            break
    assert numbers == [1, 2, 3, 4, 5, 6]


async def test_oversized_in_process_result_fails_the_attempt(server: Running) -> None:
    ok = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="test.big_result", payload=blob(100, n=1_000_000))
        )
    ).job
    too_big = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(
                task="test.big_result",
                payload=blob(100, n=1_100_000),
                retry_policy=job_pb2.RetryPolicy(max_attempts=1),
            )
        )
    ).job
    assert (await wait_for_state(server.jobs, ok.id)).state == job_pb2.JOB_STATE_COMPLETED
    failed = await wait_for_state(server.jobs, too_big.id)
    assert failed.state == job_pb2.JOB_STATE_FAILED
    assert failed.last_error == "ResultError: result is larger than 1048576 bytes encoded"


async def test_batch_whose_reply_would_not_fit_is_refused(server: Running) -> None:
    labels = {f"label{i:02d}": "v" * 250 for i in range(5)}  # about 1.3 KB per job
    jobs = [pb.EnqueueJobRequest(task="nobody.takes", labels=labels) for _ in range(3_000)]
    request = pb.BatchEnqueueJobsRequest(jobs=jobs)
    assert request.ByteSize() < MAX_MESSAGE_BYTES  # the request fits; the reply would not
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.BatchEnqueueJobs(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "jobs" in field_violations(info.value)
    assert not (await server.jobs.ListJobs(pb.ListJobsRequest())).jobs  # nothing created
    fitting = pb.BatchEnqueueJobsRequest(jobs=jobs[:2_000])
    reply = await server.jobs.BatchEnqueueJobs(fitting)
    assert len(reply.results) == 2_000 and reply.ByteSize() <= MAX_MESSAGE_BYTES


async def test_batch_repeating_a_big_jobs_key_returns_stubs_past_the_limit(
    server: Running,
) -> None:
    [big_id] = await enqueue_big(server, 1, idempotency_key="k")
    repeats = [pb.EnqueueJobRequest(task="nobody.takes", idempotency_key="k")] * 6
    reply = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=repeats))
    assert reply.ByteSize() <= MAX_MESSAGE_BYTES
    assert all(r.already_exists and r.job.id == big_id for r in reply.results)
    whole = [r for r in reply.results if r.job.payload.fields]
    stubs = [r for r in reply.results if not r.job.payload.fields]
    assert len(whole) == 4 and len(stubs) == 2  # as many whole as fit, in order
    assert reply.results[0].job.payload.fields and not reply.results[-1].job.payload.fields
    assert all(r.job.state == job_pb2.JOB_STATE_QUEUED for r in stubs)


async def test_watch_batches_end_on_size(server: Running) -> None:
    ids = await enqueue_big(server, 7)
    stream = server.jobs.WatchJobs(
        pb.WatchJobsRequest(since_revision=1, max_batch=1000), wait_for_ready=True
    )
    # revision 1 is the first enqueue; the other six are replayed in batches
    events: list[str] = []
    batches = 0
    async for message in stream:
        assert message.ByteSize() <= MAX_MESSAGE_BYTES
        kind = message.WhichOneof("kind")
        if kind == "batch":
            batches += 1
            events += [e.job.id for e in message.batch.events]
        elif kind == "event":
            events.append(message.event.job.id)
        if len(events) == 6:
            break
    stream.cancel()
    assert events == ids[1:] and batches >= 1


async def test_watch_snapshot_of_big_jobs(server: Running) -> None:
    ids = await enqueue_big(server, 5)
    stream = server.jobs.WatchJobs(pb.WatchJobsRequest(include_snapshot=True))
    seen = []
    async for message in stream:
        if message.WhichOneof("kind") == "snapshot_end":
            break
        seen.append(message.event.job.id)
    stream.cancel()
    assert seen == ids


async def test_fields_beside_the_payload_are_bounded(server: Running) -> None:
    headers = {f"x-h{i}": "v" * 1000 for i in range(70)}
    request = pb.EnqueueJobRequest(
        http=job_pb2.HttpTarget(url="https://example.com/hook", headers=headers)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.EnqueueJob(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "http" in field_violations(info.value)
    del headers["x-h0"], headers["x-h1"], headers["x-h2"], headers["x-h3"], headers["x-h4"]
    del headers["x-h5"], headers["x-h6"]
    assert request.ByteSize() > 60_000
    ok = pb.EnqueueJobRequest(
        http=job_pb2.HttpTarget(url="https://example.com/hook", headers=headers),
        schedule=job_pb2.Schedule(delay=duration_pb2.Duration(seconds=3600)),
    )
    assert (await server.jobs.EnqueueJob(ok)).job.http.headers == headers


async def test_messages_above_4_mib_are_refused_by_the_transport(server: Running) -> None:
    request = pb.EnqueueJobRequest(task="t", payload=blob(5 * MB))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.EnqueueJob(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_lease_reply_ends_on_size_and_the_rest_is_queued_again(server: Running) -> None:
    ids = await enqueue_big(server, 6, task="remote.big")
    first = await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w", max_jobs=100))
    assert first.ByteSize() <= MAX_MESSAGE_BYTES
    assert 1 <= len(first.leases) <= 4
    rest = await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w", max_jobs=100))
    more = await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w", max_jobs=100))
    leased = [lease.job.id for r in (first, rest, more) for lease in r.leases]
    assert sorted(leased) == sorted(ids)  # every job reached the worker exactly once
    for lease in first.leases:  # the leases sent are held and can be completed
        await server.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=lease.job.id, epoch=lease.epoch, worker_id="w")
        )


async def test_a_lease_not_sent_is_recorded_but_not_charged(server: Running) -> None:
    """A job left out of a full LeaseJobs reply keeps its whole retry budget: with
    max_attempts=2 it is leased again and may still fail once and retry."""
    policy = job_pb2.RetryPolicy(max_attempts=2)
    ids = await enqueue_big(server, 6, task="remote.big", retry_policy=policy)
    first = await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w", max_jobs=100))
    sent = {lease.job.id for lease in first.leases}
    unsent = [i for i in ids if i not in sent]
    assert unsent
    job_id = unsent[0]
    history = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
    [released] = history.attempts
    assert released.outcome == job_pb2.ATTEMPT_OUTCOME_LOST
    assert released.error == "LostAttempt: not sent: the LeaseJobs reply was full"
    job = (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job
    assert job.state == job_pb2.JOB_STATE_QUEUED
    lease = None
    while lease is None:  # each call takes as many as fit, in order
        reply = await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w", max_jobs=1))
        assert reply.leases
        if reply.leases[0].job.id == job_id:
            lease = reply.leases[0]
    assert lease.epoch == 2
    failed = await server.workers.FailJob(
        wpb.FailJobRequest(job_id=job_id, epoch=lease.epoch, worker_id="w", error="E: x")
    )
    # attempt 2, but only one charged: a retry is left
    assert failed.job.state == job_pb2.JOB_STATE_RETRYING


async def test_snapshot_beyond_its_byte_bound_is_refused(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobwheel.server.api import watch

    monkeypatch.setattr(watch, "SNAPSHOT_MAX_BYTES", 2 * MB)  # 128 MiB would take long to fill
    await enqueue_big(server, 3)
    stream = server.jobs.WatchJobs(pb.WatchJobsRequest(include_snapshot=True))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    detail = error_info(info.value)
    assert detail.reason == "SNAPSHOT_TOO_LARGE"
    assert detail.metadata["max_bytes"] == str(2 * MB)


async def test_bulk_cancel_reason_is_bounded_like_a_single_cancel(server: Running) -> None:
    """The reason is stored on every job it cancels: 1024 characters at most, as CancelJob."""
    flt = job_pb2.JobFilter(tasks=["nobody.takes"])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.CancelJobs(pb.CancelJobsRequest(filter=flt, reason="r" * 1025))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in field_violations(info.value)
    reply = await server.jobs.CancelJobs(pb.CancelJobsRequest(filter=flt, reason="r" * 1024))
    assert reply.count == 0
