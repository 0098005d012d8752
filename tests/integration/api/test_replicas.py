"""Several server processes sharing one PostgreSQL database."""

from __future__ import annotations

import asyncio

import pytest
from jobwheel.server.events import LogTailer
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import fresh_pg_schema, running_server
from tests.integration.api.waiting import eventually, until_watching, wait_for_state

pytestmark = pytest.mark.postgres


async def test_two_replicas_share_work_and_events() -> None:
    async with (
        fresh_pg_schema() as url,
        running_server(url) as a,
        running_server(url) as b,
    ):
        watch = b.jobs.WatchJobs(pb.WatchJobsRequest(filter=job_pb2.JobFilter(tasks=["test.echo"])))
        await until_watching(b, 1)
        reqs = [pb.EnqueueJobRequest(task="test.echo") for _ in range(200)]
        resp = await a.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
        ids = [r.job.id for r in resp.results]
        # b's engine wakes on its periodic reload or the next claim: nudge with a job of its own
        await b.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))
        for job_id in ids:
            done = await wait_for_state(a.jobs, job_id)
            assert done.state == job_pb2.JOB_STATE_COMPLETED
        for job_id in ids:
            history = await b.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
            assert len(history.attempts) == 1, "a job ran twice"
        # b, watching, saw a's changes: every job's ENQUEUED and COMPLETED, in revision order
        seen: dict[str, set[int]] = {}
        last = 0

        async def read() -> None:
            nonlocal last
            async for msg in watch:
                if not msg.HasField("event"):
                    continue
                assert msg.event.revision > last
                last = msg.event.revision
                seen.setdefault(msg.event.job.id, set()).add(msg.event.type)
                if all(job_pb2.JOB_EVENT_TYPE_COMPLETED in seen.get(i, ()) for i in ids):
                    return

        await asyncio.wait_for(read(), 15)
        watch.cancel()
        assert all(job_pb2.JOB_EVENT_TYPE_ENQUEUED in seen[i] for i in ids)


async def test_a_watcher_of_one_job_sees_another_replicas_run_of_it() -> None:
    # b has no broad watcher: it decodes a's start and end of a one-off job only because a
    # watcher of that job is on it (the tailer skips what no one on b wants)
    async with (
        fresh_pg_schema() as url,
        running_server(url) as a,
        running_server(url) as b,
    ):
        resp = await a.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.only"))
        job_id = resp.job.id
        watch = b.jobs.WatchJobs(pb.WatchJobsRequest(filter=job_pb2.JobFilter(ids=[job_id])))
        await until_watching(b, 1)
        lease = await a.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="w1", tasks=["remote.only"], max_jobs=1)
        )
        [leased] = lease.leases
        await a.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job_id, epoch=leased.epoch, worker_id="w1")
        )
        seen: list[int] = []

        async def read() -> None:
            async for msg in watch:
                if msg.HasField("event"):
                    seen.append(msg.event.type)
                    if msg.event.type == job_pb2.JOB_EVENT_TYPE_COMPLETED:
                        return

        await asyncio.wait_for(read(), 15)
        watch.cancel()
        # (its ENQUEUED too, when b's bus had not passed it yet as the watch began)
        assert seen[-2:] == [job_pb2.JOB_EVENT_TYPE_STARTED, job_pb2.JOB_EVENT_TYPE_COMPLETED]


async def test_queue_settings_and_subscriptions_reach_other_replicas_at_once() -> None:
    # the periodic refresh is an hour away: only the notification can tell b
    async with (
        fresh_pg_schema() as url,
        running_server(url, recover_interval=3600.0) as a,
        running_server(url, recover_interval=3600.0) as b,
    ):
        dispatcher = b.app.engine.dispatcher
        await a.jobs.PauseQueue(pb.PauseQueueRequest(name="mail"))
        await a.jobs.UpdateQueue(pb.UpdateQueueRequest(name="mail", max_concurrency=3))
        settings = dispatcher.rooms.settings
        await eventually(lambda: "mail" in settings and settings["mail"].paused, "the pause")
        await eventually(lambda: settings["mail"].max_concurrency == 3, "the concurrency")
        # a job of the paused queue stays QUEUED on b too; resumed on a, b runs it
        job = (await b.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo", queue="mail"))).job
        await a.jobs.ResumeQueue(pb.ResumeQueueRequest(name="mail"))
        assert (await wait_for_state(a.jobs, job.id)).state == job_pb2.JOB_STATE_COMPLETED

        deliveries = b.app.engine.deliveries
        sub = await a.jobs.CreateEventSubscription(
            pb.CreateEventSubscriptionRequest(
                url="https://example.com/hook",
                event_types=[job_pb2.JOB_EVENT_TYPE_FAILED],
                secret="whsec_" + "A" * 24,
            )
        )
        await eventually(lambda: len(deliveries.subscriptions) == 1, "the subscription")
        await a.jobs.DeleteEventSubscription(
            pb.DeleteEventSubscriptionRequest(id=sub.subscription.id)
        )
        await eventually(lambda: not deliveries.subscriptions, "the deletion")


async def test_a_replica_reads_the_settings_again_once_it_listens() -> None:
    # a change told before a replica's LISTEN took effect reached no one: the replica reads
    # the settings again as soon as it listens (a bench resuming a queue right after its
    # replicas said they listened left the last one idle until the periodic refresh)
    async with fresh_pg_schema() as url, running_server(url, recover_interval=3600.0) as a:
        assert a.app.store is not None
        told: list[int] = []
        tailer = LogTailer(a.app.store, a.app.bus, always=True, on_settings=lambda: told.append(1))
        following = asyncio.create_task(tailer.run())
        try:
            await eventually(lambda: bool(told), "a settings read once listening")
        finally:
            following.cancel()
