"""/metrics after a known workload: the counts match what was done."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.server import model
from jobwheel.server.execution.roster import NO_WORKER_AFTER
from jobwheel.server.observability.wiring import Observability
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Running, running_server
from tests.integration.api.receiver import Receiver
from tests.integration.api.waiting import until_watching, wait_for_state

NO_BACKOFF = job_pb2.RetryPolicy(max_attempts=2, initial_backoff=duration_pb2.Duration())


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Running]:
    async with running_server(db_url, metrics_listen="127.0.0.1:0") as running:
        jobs = observed(running).jobs
        assert jobs is not None
        jobs.recount_every = 0.05
        yield running


def observed(running: Running) -> Observability:
    assert running.app.observability is not None
    return running.app.observability


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(running: Running) -> Samples:
    url = f"http://127.0.0.1:{observed(running).port}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def enqueue(running: Running, **fields: object) -> job_pb2.Job:
    reply = await running.jobs.EnqueueJob(pb.EnqueueJobRequest(**fields))  # type: ignore[arg-type]
    return reply.job


async def test_counts_after_a_known_workload(server: Running) -> None:
    ok = [await enqueue(server, task="test.echo", queue="mq") for _ in range(5)]
    bad = await enqueue(server, task="test.boom", queue="mq", retry_policy=NO_BACKOFF)
    for job in (*ok, bad):
        await wait_for_state(server.jobs, job.id)
    remote = [await enqueue(server, task="remote.thing", queue="rq") for _ in range(3)]
    later = await enqueue(
        server, task="test.echo", queue="mq", schedule=job_pb2.Schedule(delay={"seconds": 3600})
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await server.jobs.GetJob(pb.GetJobRequest(id=""))

    samples = await scrape(server)
    assert value(samples, "jobwheel_jobs_enqueued_total", queue="mq", task="test.echo") == 6
    assert value(samples, "jobwheel_jobs_enqueued_total", queue="rq", task="remote.thing") == 3
    assert value(samples, "jobwheel_jobs_completed_total", queue="mq", task="test.echo") == 5
    assert value(samples, "jobwheel_jobs_started_total", queue="mq", task="test.boom") == 2
    assert value(samples, "jobwheel_jobs_retried_total", queue="mq", task="test.boom") == 1
    assert value(samples, "jobwheel_jobs_failed_total", queue="mq", task="test.boom") == 1
    assert value(samples, "jobwheel_attempt_duration_seconds_count", queue="mq",
                 task="test.boom", outcome="failed") == 2  # fmt: skip
    assert value(samples, "jobwheel_fire_lateness_seconds_count", queue="mq") == 7
    # gauges, kept from events: 3 waiting for a worker, 1 scheduled
    assert value(samples, "jobwheel_jobs", state="queued", queue="rq") == 3
    assert value(samples, "jobwheel_jobs", state="scheduled", queue="mq") == 1
    assert value(samples, "jobwheel_jobs", state="running", queue="mq") == 0
    rpc = {"grpc_type": "unary", "grpc_service": "jobwheel.v1.JobService"}
    assert value(samples, "grpc_server_handled_total", **rpc, grpc_method="EnqueueJob",
                 grpc_code="OK") == 10  # fmt: skip
    assert value(samples, "grpc_server_handled_total", **rpc, grpc_method="GetJob",
                 grpc_code="INVALID_ARGUMENT") == 1  # fmt: skip
    assert value(samples, "grpc_server_started_total", **rpc, grpc_method="EnqueueJob") == 10
    assert value(samples, "grpc_server_handling_seconds_count", **rpc,
                 grpc_method="EnqueueJob") == 10  # fmt: skip
    assert value(samples, "jobwheel_group_commit_batch_size_count", operation="enqueue") >= 1
    assert value(samples, "jobwheel_group_commit_batch_size_count", operation="settle") >= 1
    assert value(samples, "jobwheel_db_transaction_seconds_count", kind="write") >= 10

    # a remote worker leases one (running) and completes it
    leased = await server.workers.LeaseJobs(
        wpb.LeaseJobsRequest(worker_id="w1", tasks=["remote.thing"], max_jobs=1)
    )
    [lease] = leased.leases
    samples = await scrape(server)
    assert value(samples, "jobwheel_attempts_running", executor="remote") == 1
    assert value(samples, "jobwheel_jobs", state="running", queue="rq") == 1
    await server.workers.HeartbeatJob(
        wpb.HeartbeatJobRequest(job_id=lease.job.id, epoch=lease.epoch, worker_id="w1")
    )
    samples = await scrape(server)
    assert value(samples, "jobwheel_group_commit_batch_size_count", operation="renew") == 1
    await server.workers.CompleteJob(
        wpb.CompleteJobRequest(job_id=lease.job.id, epoch=lease.epoch, worker_id="w1")
    )
    # an operator's cancel: the gauge is recounted
    await server.jobs.CancelJob(pb.CancelJobRequest(id=remote[1].id))
    await server.jobs.CancelJob(pb.CancelJobRequest(id=later.id))

    deadline = time.monotonic() + 10
    while True:
        samples = await scrape(server)
        if value(samples, "jobwheel_jobs", state="queued", queue="rq") == 1 and (
            value(samples, "jobwheel_jobs", state="scheduled", queue="mq") == 0
        ):
            break
        assert time.monotonic() < deadline, "gauges not recounted"
        await asyncio.sleep(0.05)
    assert value(samples, "jobwheel_jobs", state="running", queue="rq") == 0
    assert value(samples, "jobwheel_jobs_cancelled_total", queue="rq", task="remote.thing") == 1
    assert value(samples, "jobwheel_jobs_completed_total", queue="rq", task="remote.thing") == 1
    assert value(samples, "jobwheel_attempts_running", executor="remote") == 0


async def test_rpc_metrics_count_the_status_the_guard_answers(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard maps exceptions to statuses inside the metrics stage: what is counted
    is what the caller got, a bug's INTERNAL and an undecodable body's INVALID_ARGUMENT too."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the store")

    missing = "01234567-89ab-7def-8123-456789abcdef"
    with pytest.raises(grpc.aio.AioRpcError) as not_found:
        await server.jobs.GetJob(pb.GetJobRequest(id=missing))
    assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as garbage:
        await server.channel.unary_unary("/jobwheel.v1.JobService/GetJob", lambda b: b)(b"\xff")
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    monkeypatch.setattr(server.app.store, "get_job", broken)
    with pytest.raises(grpc.aio.AioRpcError) as bug:
        await server.jobs.GetJob(pb.GetJobRequest(id=missing))
    assert bug.value.code() == grpc.StatusCode.INTERNAL

    samples = await scrape(server)
    rpc = {"grpc_type": "unary", "grpc_service": "jobwheel.v1.JobService", "grpc_method": "GetJob"}
    handled = {
        code: value(samples, "grpc_server_handled_total", **rpc, grpc_code=code)
        for code in ("NOT_FOUND", "INVALID_ARGUMENT", "INTERNAL", "UNKNOWN", "OK")
    }
    assert handled == {"NOT_FOUND": 1, "INVALID_ARGUMENT": 1, "INTERNAL": 1, "UNKNOWN": 0, "OK": 0}


async def test_health_check_and_watch_are_answered_and_counted(server: Running) -> None:
    """Health's Watch writes its stream with context.write (a coroutine, not a generator):
    observed like every other RPC, it still answers."""
    health = health_pb2_grpc.HealthStub(server.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest())
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    samples = await scrape(server)
    service = "grpc.health.v1.Health"
    check = {"grpc_type": "unary", "grpc_service": service, "grpc_method": "Check"}
    assert value(samples, "grpc_server_handled_total", **check, grpc_code="OK") == 1
    watched = {"grpc_type": "server_stream", "grpc_service": service, "grpc_method": "Watch"}
    assert value(samples, "grpc_server_started_total", **watched) == 1


async def test_watchers_and_events_sent(server: Running) -> None:
    stream = server.jobs.WatchJobs(pb.WatchJobsRequest())
    await until_watching(server, 1)  # or the job's first event may come before the watcher
    job = await enqueue(server, task="test.echo")
    seen = 0
    async for message in stream:
        if message.HasField("event") and message.event.job.id == job.id:
            seen += 1
            if message.event.job.state == job_pb2.JOB_STATE_COMPLETED:
                break
    samples = await scrape(server)
    assert value(samples, "jobwheel_watchers") == 1
    assert value(samples, "jobwheel_watch_events_sent_total") >= seen >= 3
    stream.cancel()


async def test_label_values_past_the_cap_fold_into_other(server: Running) -> None:
    metrics = observed(server).metrics
    assert metrics is not None
    metrics.queue_label.cap = len(metrics.queue_label._kept) + 1
    await wait_for_state(server.jobs, (await enqueue(server, task="test.echo", queue="q1")).id)
    await wait_for_state(server.jobs, (await enqueue(server, task="test.echo", queue="q2")).id)
    await wait_for_state(server.jobs, (await enqueue(server, task="test.echo", queue="q3")).id)
    samples = await scrape(server)
    completed = "jobwheel_jobs_completed_total"
    assert value(samples, completed, queue="q1", task="test.echo") == 1
    assert value(samples, completed, queue="other", task="test.echo") == 2
    assert not any(dict(labels).get("queue") in ("q2", "q3") for _, labels in samples)


async def test_metrics_are_off_unless_asked(db_url: str) -> None:
    async with running_server(db_url) as running:
        obs = observed(running)
        assert obs.metrics is None and obs.port == 0 and obs.jobs is None


async def test_webhooks_lease_expiries_and_jobs_without_worker(
    db_url: str, receiver: Receiver
) -> None:
    async with running_server(
        db_url, metrics_listen="127.0.0.1:0", recover_interval=0.1, webhook_allow=("127.0.0.0/8",)
    ) as server:
        roster = server.app.roster
        assert roster is not None and roster.after_flush is not None
        receiver.replies = [(503, {}, b""), (200, {}, b"{}")]
        hook = await enqueue(
            server,
            http=job_pb2.HttpTarget(url=receiver.url),
            retry_policy=NO_BACKOFF,
        )
        await wait_for_state(server.jobs, hook.id)
        waiting = [await enqueue(server, task="nobody.runs", queue="lonely") for _ in range(2)]
        roster.started -= NO_WORKER_AFTER  # as if the server had run for a minute
        await roster.flush()
        roster.after_flush(roster.unserved)
        samples = await scrape(server)
        assert value(samples, "jobwheel_webhook_deliveries_total", status_class="5xx") == 1
        assert value(samples, "jobwheel_webhook_deliveries_total", status_class="2xx") == 1
        assert value(samples, "jobwheel_jobs_without_worker", queue="lonely",
                     task="nobody.runs") == 2  # fmt: skip

        # a worker takes one and vanishes: its lease expires, the attempt is lost
        leased = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(
                worker_id="w-gone", tasks=["nobody.runs"], max_jobs=1,
                lease_duration=duration_pb2.Duration(nanos=50_000_000),
            )
        )  # fmt: skip
        assert [lease.job.id for lease in leased.leases] == [waiting[0].id]
        deadline = time.monotonic() + 10
        while value(samples, "jobwheel_lease_expiries_total") < 1:
            assert time.monotonic() < deadline, "lease expiry not counted"
            await asyncio.sleep(0.05)
            samples = await scrape(server)
        assert value(samples, "jobwheel_jobs_lost_total", queue="lonely", task="nobody.runs") == 1
        await roster.flush()
        roster.after_flush(roster.unserved)
        samples = await scrape(server)  # w-gone asked for the task within the minute
        assert value(samples, "jobwheel_jobs_without_worker", queue="lonely",
                     task="nobody.runs") == 0  # fmt: skip


async def test_gauge_follows_events_exactly_and_recounts_after_operator_actions(
    server: Running,
) -> None:
    jm, store = observed(server).jobs, server.app.store
    assert jm is not None and store is not None
    jm.recount_every = 3600  # no recount may hide a wrong step below
    flaky = job_pb2.RetryPolicy(
        max_attempts=3, initial_backoff=duration_pb2.Duration(nanos=20_000_000), jitter=0.0
    )
    local = [await enqueue(server, task="test.echo") for _ in range(3)]
    local.append(
        await enqueue(server, task="test.flaky", payload={"succeed_on": 3}, retry_policy=flaky)
    )
    local.append(await enqueue(server, task="test.boom", retry_policy=flaky))
    future = [
        await enqueue(server, task="test.echo", schedule=job_pb2.Schedule(delay={"seconds": 600}))
        for _ in range(2)
    ]
    remote = [await enqueue(server, task="remote.x", queue="r") for _ in range(4)]
    leased = await server.workers.LeaseJobs(
        wpb.LeaseJobsRequest(worker_id="w", tasks=["remote.x"], max_jobs=2)
    )
    first, second = leased.leases
    await server.workers.FailJob(
        wpb.FailJobRequest(
            job_id=first.job.id, epoch=first.epoch, worker_id="w", error="x", retryable=False
        )
    )
    for job in local:
        await wait_for_state(server.jobs, job.id)
    assert jm.recounts == 1  # only the count at start
    assert jm.counts == (await store.active_counts())[1]
    assert jm.counts == {
        (model.JobState.SCHEDULED, "default", "test.echo"): 2,
        (model.JobState.QUEUED, "r", "remote.x"): 2,
        (model.JobState.RUNNING, "r", "remote.x"): 1,
    }
    assert second.job.id in {j.id for j in remote}

    # operator actions whose previous state events do not tell: a recount follows
    jm.recount_every = 0.01
    await server.jobs.PauseJob(pb.PauseJobRequest(id=future[0].id))
    await server.jobs.CancelJob(pb.CancelJobRequest(id=second.job.id))
    await server.jobs.DeleteJob(pb.DeleteJobRequest(id=future[1].id))
    expected = {
        (model.JobState.PAUSED, "default", "test.echo"): 1,
        (model.JobState.QUEUED, "r", "remote.x"): 2,
    }
    deadline = time.monotonic() + 10
    while jm.counts != expected:
        assert time.monotonic() < deadline, jm.counts
        await asyncio.sleep(0.02)
    samples = await scrape(server)
    assert value(samples, "jobwheel_jobs", state="paused", queue="default") == 1
    assert value(samples, "jobwheel_jobs", state="running", queue="r") == 0
