"""Queues (pause, concurrency, rate) and job statistics."""

from __future__ import annotations

import time

import grpc
import pytest
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.api.helpers import field_violations
from tests.integration.api.waiting import wait_for_state


async def enqueue(server: Running, **kw: object) -> j.Job:
    return (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(**kw))).job  # type: ignore[arg-type]


async def test_list_queues_with_depths(server: Running) -> None:
    for queue, n in (("mail", 2), ("reports", 3)):
        for _ in range(n):
            await enqueue(server, task="nobody", queue=queue)
    queues = {q.name: q for q in (await server.jobs.ListQueues(pb.ListQueuesRequest())).queues}
    assert set(queues) == {"mail", "reports"}
    assert [(c.state, c.count) for c in queues["reports"].state_counts] == [(j.JOB_STATE_QUEUED, 3)]
    assert not queues["mail"].paused and queues["mail"].max_concurrency == 256


async def test_paused_queue_holds_due_jobs(server: Running) -> None:
    paused = (await server.jobs.PauseQueue(pb.PauseQueueRequest(name="slow"))).queue
    assert paused.paused
    job = await enqueue(server, task="test.echo", queue="slow")
    other = await enqueue(server, task="test.echo", queue="fast")
    assert (await wait_for_state(server.jobs, other.id)).state == j.JOB_STATE_COMPLETED
    # the dispatch cycles that ran `other` passed `job` over
    assert (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.state == j.JOB_STATE_QUEUED
    await server.jobs.ResumeQueue(pb.ResumeQueueRequest(name="slow"))
    assert (await wait_for_state(server.jobs, job.id)).state == j.JOB_STATE_COMPLETED


async def test_queue_concurrency_limit(server: Running) -> None:
    await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name="one", max_concurrency=1))
    a = await enqueue(server, task="test.block", queue="one", payload={"seconds": 0.3})
    b = await enqueue(server, task="test.block", queue="one", payload={"seconds": 0.3})
    da, db = await wait_for_state(server.jobs, a.id), await wait_for_state(server.jobs, b.id)
    first, second = sorted([da, db], key=lambda x: x.start_time.ToMicroseconds())
    assert second.start_time.ToMicroseconds() >= first.end_time.ToMicroseconds()


async def test_a_queues_limit_holds_while_dispatch_cycles_overlap(server: Running) -> None:
    # on PostgreSQL two dispatch cycles are in flight at once: the room of a claim not back
    # yet is taken, the room of endings being stored is not free until they are
    from tests import handlers

    queue = "narrow"
    await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name=queue, max_concurrency=5))
    reqs = [
        pb.EnqueueJobRequest(task="test.overlap", queue=queue, payload={"ms": i % 7})
        for i in range(300)
    ]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    for result in resp.results:
        done = await wait_for_state(server.jobs, result.job.id)
        assert done.state == j.JOB_STATE_COMPLETED and done.attempt == 1
    assert 1 <= handlers.OVERLAP_MOST[queue] <= 5
    assert handlers.OVERLAP_NOW[queue] == 0


async def test_queue_rate_limit(server: Running) -> None:
    q = (
        await server.jobs.UpdateQueue(
            pb.UpdateQueueRequest(name="rated", max_dispatches_per_second=5)
        )
    ).queue
    assert q.max_dispatches_per_second == 5
    started = time.monotonic()
    jobs = [await enqueue(server, task="test.noop", queue="rated") for _ in range(10)]
    for job in jobs:
        await wait_for_state(server.jobs, job.id)
    # a burst of 5, then 5 per second: the last starts about a second later
    assert time.monotonic() - started >= 0.8


async def test_bad_queue_updates(server: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.UpdateQueue(
            pb.UpdateQueueRequest(name="q", max_concurrency=0, max_dispatches_per_second=-1)
        )
    violations = field_violations(info.value)
    assert "max_concurrency" in violations and "max_dispatches_per_second" in violations
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.PauseQueue(pb.PauseQueueRequest(name=""))
    assert "name" in field_violations(info.value)


async def test_job_stats(server: Running) -> None:
    ok = [await enqueue(server, task="test.echo", queue="s") for _ in range(3)]
    bad = await enqueue(
        server, task="test.boom", queue="s", retry_policy=j.RetryPolicy(max_attempts=1)
    )
    for job in [*ok, bad]:
        await wait_for_state(server.jobs, job.id)
    await enqueue(server, task="nobody", queue="t")
    stats = await server.jobs.GetJobStats(pb.GetJobStatsRequest(filter=j.JobFilter(queues=["s"])))
    assert stats.total == 4
    assert {(c.state, c.count) for c in stats.state_counts} == {
        (j.JOB_STATE_COMPLETED, 3),
        (j.JOB_STATE_FAILED, 1),
    }
    assert stats.success_rate == pytest.approx(0.75)
    assert stats.completed_per_second == pytest.approx(3 / 60)
    assert stats.run_duration_p99.ToMicroseconds() >= stats.run_duration_p50.ToMicroseconds() > 0
    everything = await server.jobs.GetJobStats(pb.GetJobStatsRequest())
    assert {(c.queue, c.count) for c in everything.queue_counts} == {("s", 4), ("t", 1)}
