"""WorkerService round trips against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from jobwheel.server import handlers
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running, running_server
from tests.integration.api.helpers import field_violations
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import attempts, enqueue, error_info, lease, seconds, struct

ONE_ATTEMPT = job_pb2.RetryPolicy(max_attempts=1)


async def test_lease_heartbeat_complete(server: Running) -> None:
    job = await enqueue(server, payload={"n": 7})
    before = time.time()
    [held] = await lease(server, "w1", lease=10)
    assert held.job.id == job.id and held.epoch == 1
    assert held.job.state == job_pb2.JOB_STATE_RUNNING
    assert held.job.worker_id == "w1" and held.job.attempt == 1
    assert held.job.execution_count == 1 and held.job.payload["n"] == 7
    assert before + 9 < held.expire_time.ToMicroseconds() / 1e6 < time.time() + 11
    [running] = await attempts(server, job.id)
    assert running.outcome == job_pb2.ATTEMPT_OUTCOME_RUNNING and running.worker_id == "w1"

    beat = await server.workers.HeartbeatJob(
        wpb.HeartbeatJobRequest(
            job_id=job.id,
            epoch=1,
            worker_id="w1",
            lease_duration=seconds(60),
            progress=struct(done=3, of=10),
        )
    )
    assert not beat.cancel_requested
    assert beat.expire_time.ToMicroseconds() / 1e6 > time.time() + 50
    got = (await server.jobs.GetJob(jpb.GetJobRequest(id=job.id))).job
    assert got.progress["done"] == 3

    result = struct_pb2.Value()
    result.struct_value.update({"ok": True})
    done = await server.workers.CompleteJob(
        wpb.CompleteJobRequest(job_id=job.id, epoch=1, worker_id="w1", result=result)
    )
    assert done.job.state == job_pb2.JOB_STATE_COMPLETED
    assert done.job.result.struct_value["ok"] is True and done.job.worker_id == ""
    [finished] = await attempts(server, job.id)
    assert finished.outcome == job_pb2.ATTEMPT_OUTCOME_SUCCEEDED
    assert finished.result.struct_value["ok"] is True
    # a repeated report is refused: the attempt is over
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job.id, epoch=1, worker_id="w1")
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).metadata["current_state"] == "JOB_STATE_COMPLETED"


async def test_progress_is_streamed_as_an_event(server: Running) -> None:
    job = await enqueue(server)
    stream = server.jobs.WatchJobs(jpb.WatchJobsRequest(filter=job_pb2.JobFilter(ids=[job.id])))
    await lease(server, "w1")
    await server.workers.HeartbeatJob(
        wpb.HeartbeatJobRequest(job_id=job.id, epoch=1, worker_id="w1", progress=struct(pct=50))
    )
    async for resp in stream:
        if resp.HasField("event") and resp.event.type == job_pb2.JOB_EVENT_TYPE_PROGRESS:
            assert resp.event.job.progress["pct"] == 50
            break
    stream.cancel()


async def test_fail_retries_then_fails_for_good(server: Running) -> None:
    job = await enqueue(server, retry_policy=job_pb2.RetryPolicy(max_attempts=3))
    [held] = await lease(server)
    failed = await server.workers.FailJob(
        wpb.FailJobRequest(
            job_id=job.id,
            epoch=held.epoch,
            worker_id="w1",
            error="IOError: disk",
            retry_after=seconds(120),
        )
    )
    assert failed.job.state == job_pb2.JOB_STATE_RETRYING
    assert failed.job.last_error == "IOError: disk"
    # retry_after is a floor over the 30 s backoff
    wait = failed.job.next_run_time.ToMicroseconds() / 1e6 - time.time()
    assert 110 < wait < 121
    await server.jobs.TriggerJob(jpb.TriggerJobRequest(id=job.id))
    [again] = await lease(server, wait=5)
    assert again.epoch == 2
    final = await server.workers.FailJob(
        wpb.FailJobRequest(
            job_id=job.id, epoch=2, worker_id="w1", error="ValueError: bad input", retryable=False
        )
    )
    assert final.job.state == job_pb2.JOB_STATE_FAILED and final.job.attempt == 2
    outcomes = [a.outcome for a in await attempts(server, job.id)]
    assert outcomes == [job_pb2.ATTEMPT_OUTCOME_FAILED] * 2


async def test_long_poll_returns_as_soon_as_a_job_is_enqueued(server: Running) -> None:
    started = time.monotonic()
    assert server.app.remote is not None
    waiting = server.app.remote.polls_waiting.next()
    poll = asyncio.create_task(lease(server, wait=20))
    await asyncio.wait_for(waiting, 10)  # it found nothing and waits
    assert not poll.done()
    job = await enqueue(server)
    enqueued = time.monotonic()
    [held] = await poll
    assert held.job.id == job.id
    assert time.monotonic() - enqueued < 0.5, "woken by the event, not by a periodic re-check"
    assert time.monotonic() - started < 5


async def test_long_poll_gives_up_after_wait(server: Running) -> None:
    started = time.monotonic()
    assert await lease(server, wait=0.4) == []
    assert 0.35 < time.monotonic() - started < 2


async def test_filters_priority_and_max_jobs(server: Running) -> None:
    low = await enqueue(server, queue="q1", priority=0)
    high = await enqueue(server, queue="q1", priority=5)
    other_queue = await enqueue(server, queue="q2")
    other_task = await enqueue(server, task="remote.other", queue="q1")
    assert await lease(server, queues=["nope"]) == []
    got = await lease(server, queues=["q1"], tasks=["remote.work"], max_jobs=10)
    assert [h.job.id for h in got] == [high.id, low.id]
    rest = await lease(server, max_jobs=0)  # 0 means 1
    assert len(rest) == 1 and rest[0].job.id in (other_queue.id, other_task.id)


async def test_inprocess_tasks_are_leased_only_when_asked_for(server: Running) -> None:
    # tests.handlers registers test.echo in-process: an unfiltered worker leaves it alone
    job = await enqueue(server, task="test.echo")
    assert all(h.job.id != job.id for h in await lease(server, wait=0.2))
    done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED


async def test_paused_queue_is_not_leased(server: Running) -> None:
    await server.jobs.PauseQueue(jpb.PauseQueueRequest(name="held"))
    job = await enqueue(server, queue="held")
    assert await lease(server) == []
    await server.jobs.ResumeQueue(jpb.ResumeQueueRequest(name="held"))
    [held] = await lease(server, wait=5)
    assert held.job.id == job.id


async def test_stale_epoch_and_wrong_worker_change_nothing(server: Running) -> None:
    job = await enqueue(server)
    await lease(server, "w1")
    for epoch, worker in ((2, "w1"), (1, "w2")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.workers.CompleteJob(
                wpb.CompleteJobRequest(job_id=job.id, epoch=epoch, worker_id=worker)
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(err.value)
        assert info.reason == "LEASE_NOT_HELD"
        assert info.metadata["current_state"] == "JOB_STATE_RUNNING"
        assert info.metadata["current_epoch"] == "1"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.workers.HeartbeatJob(
                wpb.HeartbeatJobRequest(job_id=job.id, epoch=epoch, worker_id=worker)
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    got = (await server.jobs.GetJob(jpb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_RUNNING and got.worker_id == "w1"


async def test_cancelled_job_tells_the_heartbeat(server: Running) -> None:
    job = await enqueue(server)
    await lease(server, "w1")
    await server.jobs.CancelJob(jpb.CancelJobRequest(id=job.id, reason="not needed"))
    beat = await server.workers.HeartbeatJob(
        wpb.HeartbeatJobRequest(job_id=job.id, epoch=1, worker_id="w1")
    )
    assert beat.cancel_requested and beat.cancel_reason == "not needed"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job.id, epoch=1, worker_id="w1")
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_cancelled_job_s_heartbeat_from_another_worker_is_refused(
    server: Running,
) -> None:
    # only the holder learns of the cancellation (and its reason); anyone else is refused,
    # as for a job still running
    job = await enqueue(server)
    [held] = await lease(server, "w1")
    await server.jobs.CancelJob(jpb.CancelJobRequest(id=job.id, reason="secret reason"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.HeartbeatJob(
            wpb.HeartbeatJobRequest(job_id=job.id, epoch=held.epoch, worker_id="intruder")
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).reason == "LEASE_NOT_HELD"
    assert "secret" not in (err.value.details() or "")


async def test_unknown_job_is_not_found(server: Running) -> None:
    for call in (
        server.workers.HeartbeatJob(wpb.HeartbeatJobRequest(job_id="nope", epoch=1, worker_id="w")),
        server.workers.CompleteJob(wpb.CompleteJobRequest(job_id="nope", epoch=1, worker_id="w")),
        server.workers.FailJob(wpb.FailJobRequest(job_id="nope", epoch=1, worker_id="w")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_lost_lease_counts_as_an_attempt(server: Running) -> None:
    job = await enqueue(server, retry_policy=ONE_ATTEMPT)
    await lease(server, "w1", lease=0.3)  # and never heard from again
    done = await wait_for_state(server.jobs, job.id, within=10)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.last_error.startswith("LostAttempt:")
    [lost] = await attempts(server, job.id)
    assert lost.outcome == job_pb2.ATTEMPT_OUTCOME_LOST and lost.worker_id == "w1"


async def test_bad_arguments_name_the_field(server: Running) -> None:
    cases = [
        (wpb.LeaseJobsRequest(), "worker_id"),
        (wpb.LeaseJobsRequest(worker_id="inprocess@x"), "worker_id"),
        (wpb.LeaseJobsRequest(worker_id="w", max_jobs=-1), "max_jobs"),
        (wpb.LeaseJobsRequest(worker_id="w", max_jobs=1001), "max_jobs"),
        (wpb.LeaseJobsRequest(worker_id="w", wait=seconds(61)), "wait"),
        (wpb.LeaseJobsRequest(worker_id="w", lease_duration=seconds(-1)), "lease_duration"),
        (wpb.LeaseJobsRequest(worker_id="w", queues=["bad queue"]), "queues[0]"),
        (wpb.LeaseJobsRequest(worker_id="w", queues=["q"] * 1001), "queues"),
        (wpb.LeaseJobsRequest(worker_id="w", tasks=["t"] * 1001), "tasks"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.workers.LeaseJobs(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(err.value), (request, field_violations(err.value))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.FailJob(
            wpb.FailJobRequest(job_id="", epoch=0, worker_id="", retry_after=seconds(-5))
        )
    assert set(field_violations(err.value)) == {"job_id", "epoch", "worker_id", "retry_after"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.HeartbeatJob(
            wpb.HeartbeatJobRequest(job_id="j", epoch=1, worker_id="w", lease_duration=seconds(1e5))
        )
    assert "lease_duration" in field_violations(err.value)


async def test_a_lease_across_queues_takes_the_best_of_all(server: Running) -> None:
    first = await enqueue(server, queue="q3")
    low = await enqueue(server, queue="q1")
    high = await enqueue(server, queue="q2", priority=5)
    later = await enqueue(server, queue="q3")
    got = await lease(server, max_jobs=3)  # every queue
    assert [h.job.id for h in got] == [high.id, first.id, low.id]
    [last] = await lease(server, queues=["q1", "q3"], max_jobs=5)
    assert last.job.id == later.id


async def test_a_lease_across_many_queues(server: Running) -> None:
    # more queues than a lease probes one by one (64 on SQLite): one query over all of them
    requests = [jpb.EnqueueJobRequest(task="remote.work", queue=f"m{i:02}") for i in range(70)]
    await server.jobs.BatchEnqueueJobs(jpb.BatchEnqueueJobsRequest(jobs=requests))
    got = await lease(server, max_jobs=100)
    assert sorted(h.job.queue for h in got) == [f"m{i:02}" for i in range(70)]


async def test_a_lease_naming_1000_queues_and_1000_tasks(server: Running) -> None:
    # the limits of both lists at once: every queue probe would repeat every task
    queues = [f"q{i:04d}".ljust(128, "x") for i in range(1000)]
    tasks = [f"t{i:04d}".ljust(128, "y") for i in range(1000)]
    requests = [
        jpb.EnqueueJobRequest(task=tasks[i], queue=queues[i]) for i in range(0, 1000, 100)
    ] + [jpb.EnqueueJobRequest(task="remote.other", queue=queues[0])]
    await server.jobs.BatchEnqueueJobs(jpb.BatchEnqueueJobsRequest(jobs=requests))
    got = await lease(server, queues=queues, tasks=tasks, max_jobs=1000)
    assert sorted(h.job.task for h in got) == tasks[::100]


@pytest.fixture
async def plain_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """A server as `make serve` starts it: SQLite, none of the test suite's in-process
    handlers (a lease naming one task then probes each named queue on its own)."""
    import tests.handlers  # noqa: F401  (registered now, so that running_server adds none)

    monkeypatch.setattr(handlers, "_registry", {})
    async with running_server(f"sqlite:///{tmp_path / 'jobwheel.db'}") as running:
        yield running


async def test_a_lease_naming_1000_queues_and_one_task(plain_server: Running) -> None:
    # past 500 queues SQLite refuses one probe per queue (a compound SELECT of more terms):
    # the call answered INTERNAL
    queues = [f"q{i:04d}" for i in range(1000)]
    job = await enqueue(plain_server, queue=queues[-1])
    got = await lease(plain_server, queues=queues, tasks=["remote.work"])
    assert [h.job.id for h in got] == [job.id]
