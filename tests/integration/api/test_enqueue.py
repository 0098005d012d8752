"""EnqueueJob / BatchEnqueueJobs / GetJob against a real server on port 0."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.api.helpers import field_violations


def payload(**fields: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


def ts(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return t


async def invalid(call: object) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(info.value)


async def test_enqueue_now_is_queued_and_readable(server: Running) -> None:
    resp = await server.jobs.EnqueueJob(
        pb.EnqueueJobRequest(
            task="send_email",
            payload=payload(to="a@example.com", n=3),
            labels={"team": "growth"},
            priority=5,
        )
    )
    job = resp.job
    assert not resp.already_exists
    assert job.id and job.queue == "default" and job.task == "send_email"
    assert job.state == job_pb2.JOB_STATE_QUEUED
    assert dict(job.labels) == {"team": "growth"} and job.priority == 5
    assert job.retry_policy.max_attempts == 4
    assert job.retry_policy.initial_backoff.seconds == 30
    assert job.retry_policy.max_backoff.seconds == 300
    assert job.HasField("create_time") and job.HasField("next_run_time")
    got = (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got == job
    assert got.payload["n"] == 3


async def test_enqueue_at_a_time_and_after_a_delay_is_scheduled(server: Running) -> None:
    at = ts(3600)
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="report", schedule=job_pb2.Schedule(start_time=at))
        )
    ).job
    assert job.state == job_pb2.JOB_STATE_SCHEDULED
    assert job.next_run_time.seconds == at.seconds
    before = time.time()
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(
                task="report", schedule=job_pb2.Schedule(delay=duration_pb2.Duration(seconds=90))
            )
        )
    ).job
    assert job.state == job_pb2.JOB_STATE_SCHEDULED
    assert before + 89 <= job.next_run_time.seconds <= time.time() + 91


async def test_recurring_cron_gets_its_first_occurrence(server: Running) -> None:
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(
                task="daily",
                schedule=job_pb2.Schedule(cron="0 9 * * *", time_zone="America/New_York"),
            )
        )
    ).job
    assert job.recurring and job.state == job_pb2.JOB_STATE_SCHEDULED
    assert job.next_run_time.seconds > time.time()
    # 09:00 in New York is 13:00 or 14:00 UTC depending on daylight saving
    assert job.next_run_time.ToDatetime().hour in (13, 14)


async def test_unknown_id_is_not_found(server: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.GetJob(pb.GetJobRequest(id="0190abcd-0000-7000-8000-000000000000"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_input_names_every_field(server: Running) -> None:
    big = payload(blob="x" * (1 << 20))
    violations = await invalid(
        server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(
                task="bad name!",
                queue="q/with/slash",
                payload=big,
                timeout=duration_pb2.Duration(seconds=-1),
                schedule=job_pb2.Schedule(
                    cron="not a cron",
                    time_zone="Mars/Olympus_Mons",
                    interval=duration_pb2.Duration(seconds=60),
                    limit=-1,
                ),
            )
        )
    )
    for name in (
        "task",
        "queue",
        "payload",
        "timeout",
        "schedule.cron",
        "schedule.time_zone",
        "schedule.interval",
        "schedule.limit",
    ):
        assert name in violations, (name, violations)


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (job_pb2.Schedule(start_time=ts(-3600)), "schedule.start_time"),
        (job_pb2.Schedule(delay=duration_pb2.Duration(seconds=-5)), "schedule.delay"),
        (job_pb2.Schedule(interval=duration_pb2.Duration(nanos=500_000_000)), "schedule.interval"),
        (
            job_pb2.Schedule(interval=duration_pb2.Duration(seconds=60), end_time=ts(-10)),
            "schedule.end_time",
        ),
        (job_pb2.Schedule(delay=duration_pb2.Duration(seconds=1, nanos=-1)), "schedule.delay"),
    ],
)
async def test_bad_schedules(server: Running, schedule: job_pb2.Schedule, field: str) -> None:
    violations = await invalid(
        server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t", schedule=schedule))
    )
    assert field in violations


async def test_missing_task_and_bad_retry_policy(server: Running) -> None:
    violations = await invalid(
        server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(retry_policy=job_pb2.RetryPolicy(multiplier=0.5, jitter=2.0))
        )
    )
    assert violations["task"] == "is required"
    assert "retry_policy.multiplier" in violations
    assert "retry_policy.jitter" in violations


async def test_idempotency_key_returns_the_original(server: Running) -> None:
    req = pb.EnqueueJobRequest(task="charge", idempotency_key="order-42")
    first = await server.jobs.EnqueueJob(req)
    again = await server.jobs.EnqueueJob(req)
    assert not first.already_exists and again.already_exists
    assert again.job.id == first.job.id


async def test_idempotency_under_50_concurrent_identical_calls(server: Running) -> None:
    req = pb.EnqueueJobRequest(task="charge", idempotency_key="order-concurrent")
    results = await asyncio.gather(*(server.jobs.EnqueueJob(req) for _ in range(50)))
    assert len({r.job.id for r in results}) == 1
    assert sum(not r.already_exists for r in results) == 1
    listed = await server.jobs.ListJobs(
        pb.ListJobsRequest(filter=job_pb2.JobFilter(tasks=["charge"]))
    )
    assert len(listed.jobs) == 1


async def test_batch_enqueue_all_or_nothing(server: Running) -> None:
    good = [pb.EnqueueJobRequest(task=f"t{i}", payload=payload(i=i)) for i in range(5)]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=good))
    assert [r.job.task for r in resp.results] == [f"t{i}" for i in range(5)]
    bad = [*good, pb.EnqueueJobRequest(task="")]
    violations = await invalid(server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=bad)))
    assert "jobs[5].task" in violations
    listed = await server.jobs.ListJobs(pb.ListJobsRequest(page_size=100))
    assert len(listed.jobs) == 5


async def test_batch_repeats_an_idempotency_key_once(server: Running) -> None:
    reqs = [pb.EnqueueJobRequest(task="t", idempotency_key="same") for _ in range(3)]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    assert len({r.job.id for r in resp.results}) == 1
    assert [r.already_exists for r in resp.results] == [False, True, True]


async def test_bad_http_targets(server: Running) -> None:
    target = job_pb2.HttpTarget(url="ftp://example.com/x", method="TRACE", headers={"Host": "x"})
    violations = await invalid(server.jobs.EnqueueJob(pb.EnqueueJobRequest(http=target)))
    assert {"http.url", "http.method", "http.headers[Host]"} <= set(violations)
