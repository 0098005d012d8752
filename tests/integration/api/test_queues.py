"""Queues (pause, concurrency, rate) and job statistics."""

from __future__ import annotations

import time
from typing import Any

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


async def test_a_backlog_keeps_two_dispatch_cycles_in_flight(server: Running) -> None:
    # on PostgreSQL, while a cycle claiming a full share of a queue is in flight, the next
    # goes out without waiting for it; on SQLite cycles run one at a time in the loop
    assert server.app.engine is not None
    store = server.app.engine.dispatcher.store
    in_flight = most = 0
    cycle = store.dispatch_cycle

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await cycle(*args, **kwargs)
        finally:
            in_flight -= 1

    queue = "backlog"
    await server.jobs.PauseQueue(pb.PauseQueueRequest(name=queue))
    reqs = [pb.EnqueueJobRequest(task="test.noop", queue=queue) for _ in range(600)]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    store.dispatch_cycle = counted  # type: ignore[method-assign]
    await server.jobs.ResumeQueue(pb.ResumeQueueRequest(name=queue))  # one wake-up
    for result in resp.results:
        assert (await wait_for_state(server.jobs, result.job.id)).state == j.JOB_STATE_COMPLETED
    assert most == (1 if store.dialect.single_writer else 2)


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


@pytest.mark.uvloop
async def test_rate_limited_queues_dispatch_on_uvloop(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # past their burst (a second's worth), the token buckets ask for cycles a fraction of a
    # millisecond away, which uvloop's timers round to none at all
    names = ("rated-a", "rated-b")
    for name in names:
        await server.jobs.UpdateQueue(
            pb.UpdateQueueRequest(name=name, max_dispatches_per_second=1000)
        )
    batch = [
        pb.EnqueueJobRequest(task="test.noop", queue=name) for name in names for _ in range(1200)
    ]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=batch))
    for result in resp.results[::100]:
        assert (await wait_for_state(server.jobs, result.job.id)).state == j.JOB_STATE_COMPLETED
    assert not [r for r in caplog.records if "dispatch failed" in r.getMessage()]


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


async def enqueue_into_queues(server: Running, names: list[str]) -> None:
    """One job (of a task no handler takes, so it stays QUEUED) in each queue."""
    for start in range(0, len(names), 1000):
        batch = [
            pb.EnqueueJobRequest(task="nobody", queue=name) for name in names[start : start + 1000]
        ]
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=batch))


async def list_queue_pages(server: Running, page_size: int) -> list[list[str]]:
    pages, token = [], ""
    while True:
        reply = await server.jobs.ListQueues(
            pb.ListQueuesRequest(page_size=page_size, page_token=token)
        )
        pages.append([q.name for q in reply.queues])
        token = reply.next_page_token
        if not token:
            return pages


async def test_list_queues_pages_by_name(server: Running) -> None:
    # queues known by their settings only, by their jobs only, and by both
    for name in ("a", "d", "g"):
        await server.jobs.UpdateQueue(pb.UpdateQueueRequest(name=name, max_concurrency=3))
    await enqueue_into_queues(server, ["b", "c", "d", "e", "f"])
    assert await list_queue_pages(server, 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert await list_queue_pages(server, 7) == [["a", "b", "c", "d", "e", "f", "g"]]
    first = await server.jobs.ListQueues(pb.ListQueuesRequest(page_size=3))
    queues = {q.name: q for q in first.queues}
    assert queues["a"].max_concurrency == 3 and not queues["a"].state_counts
    assert [(c.state, c.count) for c in queues["b"].state_counts] == [(j.JOB_STATE_QUEUED, 1)]


async def test_list_queues_page_size_limit(server: Running) -> None:
    names = [f"q{i:04d}" for i in range(1001)]
    await enqueue_into_queues(server, names)
    for size in (0, 1000, 1001, 2**31 - 1):  # 0 and anything above mean the 1000 limit
        reply = await server.jobs.ListQueues(pb.ListQueuesRequest(page_size=size))
        assert [q.name for q in reply.queues] == names[:1000] and reply.next_page_token
    last = await server.jobs.ListQueues(pb.ListQueuesRequest(page_token=reply.next_page_token))
    assert [q.name for q in last.queues] == names[1000:] and not last.next_page_token


async def test_list_queues_refuses_bad_paging(server: Running) -> None:
    await enqueue_into_queues(server, ["a", "b"])
    jobs_token = (await server.jobs.ListJobs(pb.ListJobsRequest(page_size=1))).next_page_token
    queues_token = (await server.jobs.ListQueues(pb.ListQueuesRequest(page_size=1))).next_page_token
    bad = {
        "page_size": pb.ListQueuesRequest(page_size=-1),
        "page_token": pb.ListQueuesRequest(page_token="not a token"),
    }
    for field, request in [
        *bad.items(),
        ("page_token", pb.ListQueuesRequest(page_token=jobs_token)),  # another list's
        ("page_token", pb.ListQueuesRequest(page_token=queues_token + "A" * 256)),  # too long
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await server.jobs.ListQueues(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(info.value)
    # and a ListQueues token is no ListJobs token
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.ListJobs(pb.ListJobsRequest(page_token=queues_token))
    assert "page_token" in field_violations(info.value)


@pytest.mark.parametrize("queues", [1000, 1001])
async def test_job_stats_lists_the_largest_queues(server: Running, queues: int) -> None:
    names = [f"q{i:04d}" for i in range(queues)]
    await enqueue_into_queues(server, [*names, "q0999", "q0999"])  # q0999: the largest
    stats = await server.jobs.GetJobStats(pb.GetJobStatsRequest())
    counts = {c.queue: c.count for c in stats.queue_counts}
    assert len(counts) == 1000 and counts["q0999"] == 3
    assert [c.queue for c in stats.queue_counts] == sorted(counts)
    assert stats.queue_counts_truncated == (queues > 1000)
    assert stats.total == queues + 2
