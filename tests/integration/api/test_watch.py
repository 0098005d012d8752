"""WatchJobs: live, snapshot, resume, heartbeats, slow watchers, cancellation."""

from __future__ import annotations

import asyncio
import gc
import time

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running, running_server
from tests.integration.api.helpers import field_violations
from tests.integration.api.waiting import take, until_watching
from tests.integration.workers.helpers import error_info

E = job_pb2


async def enqueue_many(server: Running, n: int, task: str = "nobody.handles") -> list[str]:
    reqs = [pb.EnqueueJobRequest(task=task) for _ in range(n)]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    return [r.job.id for r in resp.results]


async def test_live_events_of_a_job_run(server: Running) -> None:
    call = server.jobs.WatchJobs(pb.WatchJobsRequest(filter=E.JobFilter(tasks=["test.echo"])))
    await until_watching(server, 1)
    job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))).job
    msgs = await take(call, 3)
    call.cancel()
    events = [m.event for m in msgs]
    assert [e.type for e in events] == [
        E.JOB_EVENT_TYPE_ENQUEUED,
        E.JOB_EVENT_TYPE_STARTED,
        E.JOB_EVENT_TYPE_COMPLETED,
    ]
    assert all(e.job.id == job.id for e in events)
    assert [e.job.state for e in events] == [
        E.JOB_STATE_QUEUED,
        E.JOB_STATE_RUNNING,
        E.JOB_STATE_COMPLETED,
    ]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3


async def test_firehose_revisions_increase_by_one(server: Running) -> None:
    call = server.jobs.WatchJobs(pb.WatchJobsRequest())
    await until_watching(server, 1)
    await enqueue_many(server, 20)
    msgs = await take(call, 20)
    call.cancel()
    revisions = [m.event.revision for m in msgs]
    assert revisions == list(range(revisions[0], revisions[0] + 20))


async def test_snapshot_then_changes_without_gap_or_duplicate(server: Running) -> None:
    before = await enqueue_many(server, 3, task="snap.task")
    flt = E.JobFilter(tasks=["snap.task"])
    call = server.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt, include_snapshot=True))
    first = await take(call, 4)
    assert [m.event.type for m in first[:3]] == [E.JOB_EVENT_TYPE_SNAPSHOT] * 3
    assert {m.event.job.id for m in first[:3]} == set(before)
    assert first[3].HasField("snapshot_end")
    revision = first[3].snapshot_end.revision
    after = await enqueue_many(server, 2, task="snap.task")
    more = await take(call, 2)
    call.cancel()
    assert [m.event.job.id for m in more] == after
    assert all(m.event.revision > revision for m in more)


async def test_resume_replays_from_the_log_exactly_once(server: Running) -> None:
    call = server.jobs.WatchJobs(pb.WatchJobsRequest())
    await until_watching(server, 1)
    ids = await enqueue_many(server, 10)
    seen = await take(call, 10)
    call.cancel()
    resume_from = seen[3].event.revision
    call = server.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=resume_from))
    replayed = await take(call, 6)
    assert [m.event.job.id for m in replayed] == ids[4:]
    later = await enqueue_many(server, 1)
    [live] = await take(call, 1)
    call.cancel()
    assert live.event.job.id == later[0]
    assert live.event.revision == replayed[-1].event.revision + 1


async def test_compacted_revision_is_out_of_range(server: Running) -> None:
    await enqueue_many(server, 5)
    assert server.app.store is not None
    await server.app.store.prune_events(time.time_ns() // 1000 + 10**9, keep_at_least=2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in server.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=1)):
            pass
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "oldest available is 4" in (info.value.details() or "")


async def test_bad_requests(server: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in server.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=-1)):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "since_revision" in field_violations(info.value)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        flt = E.JobFilter(states=[E.JOB_STATE_UNSPECIFIED])
        async for _ in server.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt)):
            pass
    assert "filter.states[0]" in field_violations(info.value)


async def test_idle_stream_gets_heartbeats(db_url: str) -> None:
    async with running_server(db_url, watch_heartbeat=0.1) as server:
        await enqueue_many(server, 2)
        call = server.jobs.WatchJobs(pb.WatchJobsRequest())
        msg = await asyncio.wait_for(call.read(), 5)
        call.cancel()
        assert msg.HasField("heartbeat") and msg.heartbeat.revision == 2


async def test_stalled_watcher_is_dropped_and_hurts_no_one(db_url: str) -> None:
    async with running_server(db_url, watch_buffer=20) as server:
        stalled = server.jobs.WatchJobs(pb.WatchJobsRequest())
        healthy = server.jobs.WatchJobs(
            pb.WatchJobsRequest(filter=E.JobFilter(tasks=["test.echo"]))
        )
        await until_watching(server, 2)
        await enqueue_many(server, 3000)  # far more than the window plus the buffer
        job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))).job
        msgs = await take(healthy, 3)
        assert msgs[-1].event.type == E.JOB_EVENT_TYPE_COMPLETED and msgs[-1].event.job.id == job.id
        healthy.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stalled:
                pass
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
        assert status is not None
        detail = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(detail)
        assert detail.reason == "WATCHER_TOO_SLOW" and int(detail.metadata["last_revision"]) >= 0


async def test_snapshots_share_a_memory_budget(server: Running) -> None:
    watcher = server.app.watcher
    payload = struct_pb2.Struct()
    payload.update({"blob": "x" * 900_000})
    ids = [
        (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="big.one", payload=payload))).job.id
        for _ in range(10)
    ]
    request = pb.WatchJobsRequest(filter=E.JobFilter(tasks=["big.one"]), include_snapshot=True)
    stalled = server.jobs.WatchJobs(request)  # not read yet: its snapshot waits in the server
    one = pb.WatchJobsRequest(filter=E.JobFilter(ids=ids[:1]), include_snapshot=True)
    held, same, deadline = -1, 0, time.monotonic() + 10
    # until the snapshot was read and gRPC's send buffers are full: no change for 0.9 s
    while same < 3 and time.monotonic() < deadline:
        now = watcher.snapshot_bytes
        same = same + 1 if now == held and now > 0 else 0
        held = now
        await asyncio.sleep(0.3)
    assert held > 900_000  # what the transport would not take
    watcher.snapshots_max_bytes = held + 500_000  # no room for one more job

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in server.jobs.WatchJobs(one):
            pass
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(info.value).reason == "SNAPSHOTS_BUSY"
    assert watcher.snapshot_bytes == held  # the refused one gave back what it read

    # once the stalled watcher reads its snapshot, the bytes are free for the next one
    got = await take(stalled, 11)
    assert got[-1].HasField("snapshot_end") and watcher.snapshot_bytes == 0
    stalled.cancel()
    retried = server.jobs.WatchJobs(one)
    again = await take(retried, 2)
    retried.cancel()
    assert again[0].event.job.id == ids[0] and again[1].HasField("snapshot_end")


async def test_cancelled_streams_leave_nothing_behind(server: Running) -> None:
    bus = server.app.bus
    tasks_before = len(asyncio.all_tasks())
    calls = [
        server.jobs.WatchJobs(pb.WatchJobsRequest(filter=E.JobFilter(ids=[f"job-{i}"])))
        for i in range(1000)
    ]
    await until_watching(server, 1000, within=20)
    assert bus.subscriptions == 1000
    for call in calls:
        call.cancel()
    deadline = time.monotonic() + 10
    while bus.subscriptions and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert bus.subscriptions == 0
    assert not bus._by_job and not bus._broad
    del calls
    gc.collect()
    deadline = time.monotonic() + 10
    while len(asyncio.all_tasks()) > tasks_before + 1 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= tasks_before + 1


async def test_events_a_writer_never_handed_over_are_read_from_the_log(server: Running) -> None:
    """A writer cancelled between its commit and handing its events to the bus must not
    stall watchers: the log tailer fills the gap."""
    store = server.app.store
    assert store is not None
    call = server.jobs.WatchJobs(pb.WatchJobsRequest())
    await until_watching(server, 1)
    sink, store.event_sink = store.event_sink, None  # committed, never handed over
    lost = await enqueue_many(server, 1)
    store.event_sink = sink
    after = await enqueue_many(server, 1)
    msgs = await take(call, 2, within=5)
    call.cancel()
    assert [m.event.job.id for m in msgs] == [*lost, *after]


async def test_the_last_events_a_writer_never_handed_over_are_read_from_the_log(
    server: Running,
) -> None:
    """With no later event to show a gap, the log's head being ahead of the bus for a whole
    check is what sends the log tailer to read them."""
    store = server.app.store
    assert store is not None
    call = server.jobs.WatchJobs(pb.WatchJobsRequest())
    await until_watching(server, 1)
    sink, store.event_sink = store.event_sink, None  # committed, never handed over
    lost = await enqueue_many(server, 2)
    store.event_sink = sink
    msgs = await take(call, 2, within=10)
    call.cancel()
    assert [m.event.job.id for m in msgs] == lost


async def test_batches_when_asked(server: Running) -> None:
    await enqueue_many(server, 1)  # so the replay below starts after a real revision
    call = server.jobs.WatchJobs(pb.WatchJobsRequest(max_batch=50))
    await until_watching(server, 1)
    ids = await enqueue_many(server, 200)
    messages, events = 0, []
    while len(events) < 200:
        msg = await asyncio.wait_for(call.read(), 5)
        if msg.HasField("heartbeat"):
            continue
        messages += 1
        events += list(msg.batch.events) if msg.HasField("batch") else [msg.event]
        assert len(msg.batch.events) <= 50
    call.cancel()
    assert [e.job.id for e in events] == ids
    revisions = [e.revision for e in events]
    assert revisions == list(range(revisions[0], revisions[0] + 200))
    assert messages < 200  # events that waited together came together
    # a replay from the log is batched too
    replay = server.jobs.WatchJobs(
        pb.WatchJobsRequest(since_revision=revisions[0] - 1, max_batch=100)
    )
    first = await asyncio.wait_for(replay.read(), 5)
    replay.cancel()
    assert [e.revision for e in first.batch.events] == revisions[:100]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in server.jobs.WatchJobs(pb.WatchJobsRequest(max_batch=-1)):
            pass
    assert "max_batch" in field_violations(info.value)
