"""WatchJobs at its edges: live events filtered by the snapshot's rules (JSON types at every
level), the replay of a deleted job's events (its payload kept by its DELETED event), a
watcher resuming on another replica just after an event, a server stopping while a stream
replays the log."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pytest
from google.protobuf import struct_pb2
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.v1 import job_pb2 as E
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import job_service_pb2_grpc

from tests.conftest import Running, fresh_pg_schema, running_server
from tests.integration.api.waiting import take, until_watching
from tests.integration.workers.helpers import error_info


def struct(fields: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


async def events_for(stream: grpc.aio.UnaryStreamCall, seconds: float) -> list[E.JobEvent]:
    """The events a stream delivers within `seconds`."""
    out: list[E.JobEvent] = []

    async def read() -> None:
        async for msg in stream:
            if msg.HasField("event"):
                out.append(msg.event)
            elif msg.HasField("batch"):
                out.extend(msg.batch.events)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), seconds)
    stream.cancel()
    return out


async def test_replay_with_a_payload_filter_keeps_the_events_of_a_deleted_job(
    server: Running,
) -> None:
    # a resumed stream delivers what the live stream of the same filter did: the replay read
    # a deleted job's payload from its row, gone, and matched the filter against {}
    await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody.handles"))  # revision 1
    flt = E.JobFilter(payload=struct({"customer": "acme"}))
    live = server.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt))
    await until_watching(server, 1)
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="nobody.handles", payload=struct({"customer": "acme"}))
        )
    ).job
    await server.jobs.DeleteJob(pb.DeleteJobRequest(id=job.id))
    seen_live = [m.event for m in await take(live, 2)]
    live.cancel()
    assert [e.type for e in seen_live] == [E.JOB_EVENT_TYPE_ENQUEUED, E.JOB_EVENT_TYPE_DELETED]
    # the watcher lost its connection before those two: it resumes from the one before
    resumed = server.jobs.WatchJobs(
        pb.WatchJobsRequest(filter=flt, since_revision=seen_live[0].revision - 1)
    )
    replayed = await events_for(resumed, 2)
    assert [(e.revision, e.type) for e in replayed] == [(e.revision, e.type) for e in seen_live]
    assert [dict(e.job.payload) for e in replayed] == [{"customer": "acme"}] * 2


async def test_replayed_events_of_jobs_deleted_in_bulk_keep_their_payload(db_url: str) -> None:
    # JobEvent.job: "the job as it is after the change" (a payload never changes); read back
    # from the log by a restarted server (no events of this process in memory)
    async with running_server(db_url) as server:
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody.handles"))  # revision 1
        batch = [pb.EnqueueJobRequest(task="doomed", payload=struct({"n": n})) for n in range(300)]
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=batch))
        flt = E.JobFilter(tasks=["doomed"])
        deleted = await server.jobs.DeleteJobs(pb.DeleteJobsRequest(filter=flt))
        assert deleted.count == 300
    async with running_server(db_url) as server:
        replayed = await events_for(
            server.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=1, max_batch=1000)), 3
        )
    assert len(replayed) == 600
    by_type: dict[int, list[float]] = {}
    for e in replayed:
        by_type.setdefault(e.type, []).append(e.job.payload["n"])
    expected = [float(n) for n in range(300)]
    assert sorted(by_type[E.JOB_EVENT_TYPE_ENQUEUED]) == expected
    assert sorted(by_type[E.JOB_EVENT_TYPE_DELETED]) == expected


async def test_live_payload_filter_follows_the_same_rules_as_the_snapshot(
    server: Running,
) -> None:
    # proto WatchJobsRequest.include_snapshot: "First send the matching jobs as they are now
    # ..., then every change after it"; Dialect.json_field_equals / matching.py: values
    # "match by JSON type and value (true is not 1)"; objects and arrays compare whole.
    flt = E.JobFilter(tasks=["review.flags"], payload=struct({"flags": [1]}))
    not_matching = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="review.flags", payload=struct({"flags": [True]}))
        )
    ).job
    listed = (await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))).jobs
    assert list(listed) == []  # the SQL rules: [true] is not [1]

    stream = server.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt, include_snapshot=True))
    [end] = await take(stream, 1)
    assert end.HasField("snapshot_end")  # no snapshot entry: consistent with ListJobs
    # a change of the job the snapshot left out, then a job that does match
    await server.jobs.PauseJob(pb.PauseJobRequest(id=not_matching.id))
    matching = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="review.flags", payload=struct({"flags": [1]}))
        )
    ).job
    [first] = await take(stream, 1)
    stream.cancel()
    assert first.event.job.id == matching.id, (
        f"live stream delivered {E.JobEventType.Name(first.event.type)} of a job whose "
        "payload the filter does not match"
    )


@pytest.mark.postgres
async def test_resume_on_another_replica_right_after_an_event() -> None:
    # DESIGN §5: "WatchJobs on any replica sees events from all replicas"; proto JobEvent:
    # "Pass the last one seen as WatchJobsRequest.since_revision to resume"; Watcher.close():
    # "a watcher reconnects elsewhere". A revision that is committed in the shared log is not
    # "ahead" of it, whichever replica the watcher reconnects to.
    async with (
        fresh_pg_schema() as url,
        running_server(url) as a,
        running_server(url) as b,
    ):
        refused = []
        for i in range(20):
            watch_a = a.jobs.WatchJobs(pb.WatchJobsRequest())
            await until_watching(a, i + 1)  # a's stream subscribed
            job = (await a.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody.handles"))).job
            [seen] = await take(watch_a, 1)
            watch_a.cancel()
            assert seen.event.job.id == job.id
            # a goes away; the watcher resumes on b at once
            resumed = b.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=seen.event.revision))
            try:
                await asyncio.wait_for(resumed.read(), 0.3)
            except TimeoutError:
                pass  # open, waiting for changes: as it should be
            except grpc.aio.AioRpcError as err:
                refused.append(f"{err.code().name}: {err.details()}")
            resumed.cancel()
        assert refused == [], refused


async def test_stop_ends_a_replaying_stream_at_once_with_unavailable(db_url: str) -> None:
    # app.py stop(): "watch streams end now with UNAVAILABLE"; Watcher.close(): "Ends every
    # open stream now with UNAVAILABLE (the server is stopping): a watcher reconnects
    # elsewhere instead of holding the shutdown's grace period."
    import tests.handlers  # noqa: F401

    app = App(Settings(listen="127.0.0.1:0", db=db_url, grace_period=30.0))
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    stopping: asyncio.Task[None] | None = None
    try:
        batch = pb.BatchEnqueueJobsRequest(
            jobs=[pb.EnqueueJobRequest(task="nobody.handles")] * 10_000
        )
        for _ in range(3):
            await stub.BatchEnqueueJobs(batch)
        call = stub.WatchJobs(pb.WatchJobsRequest(since_revision=1))  # a long replay
        for _ in range(10):
            await call.read()
        start = time.monotonic()
        stopping = asyncio.create_task(app.stop())
        after_stop = 0
        code = None
        try:
            while await call.read() is not grpc.aio.EOF:
                after_stop += 1
        except grpc.aio.AioRpcError as err:
            code = err.code()
        ended = time.monotonic() - start
        assert code == grpc.StatusCode.UNAVAILABLE
        assert after_stop < 10_000 and ended < 2.0, (
            f"the stream went on replaying {after_stop} events for {ended:.1f} s after the "
            "server began to stop"
        )
    finally:
        if stopping is None:
            stopping = asyncio.create_task(app.stop(0.5))
        await stopping
        await channel.close()


async def test_events_pruned_during_a_replay_end_it_rather_than_leave_a_gap(
    server: Running,
) -> None:
    # the log pruned between two pages of a replay: the stream jumped over the events gone,
    # and the watcher never knew; now it ends REVISION_COMPACTED after the last one kept
    batch = pb.BatchEnqueueJobsRequest(jobs=[pb.EnqueueJobRequest(task="nobody.handles")] * 2500)
    await server.jobs.BatchEnqueueJobs(batch)
    call = server.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=1))
    seen = [(await call.read()).event.revision for _ in range(10)]
    await server.app.store.prune_events(time.time_ns() // 1000 + 10**9)  # all but the newest
    code, reason = None, ""

    async def read_on() -> None:
        while (msg := await call.read()) is not grpc.aio.EOF:
            seen.append(msg.event.revision)

    try:
        await asyncio.wait_for(read_on(), 10)
    except grpc.aio.AioRpcError as err:
        code = err.code()
        reason = error_info(err).reason
    except TimeoutError:
        call.cancel()  # the stream went live past a gap, waiting for more
    assert code == grpc.StatusCode.OUT_OF_RANGE and reason == "REVISION_COMPACTED"
    assert seen == list(range(2, seen[-1] + 1))  # no gap in what was delivered
