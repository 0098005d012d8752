"""AsyncClient against a real server on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from jobwheel.client import AsyncClient, InvalidArgument, NotFound, enqueue_request
from jobwheel.v1 import job_pb2

from tests.conftest import Running


@pytest.fixture
async def client(server: Running) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.address) as c:
        yield c


async def test_enqueue_get_and_wait(client: AsyncClient) -> None:
    resp = await client.enqueue_job(
        "test.echo", payload={"n": 1}, labels={"team": "a"}, priority=3, max_attempts=2
    )
    assert not resp.already_exists
    job = await client.get_job(resp.job.id)
    assert job.task == "test.echo"
    assert dict(job.labels) == {"team": "a"}
    assert job.priority == 3
    assert job.retry_policy.max_attempts == 2
    done = await client.wait_job(job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    attempts = [a async for a in client.iter_job_attempts(job.id)]
    assert [a.outcome for a in attempts] == [job_pb2.ATTEMPT_OUTCOME_SUCCEEDED]


async def test_schedule_keywords(client: AsyncClient) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    job = (await client.enqueue_job("test.noop", at=at)).job
    assert job.state == job_pb2.JOB_STATE_SCHEDULED
    assert abs(job.next_run_time.ToDatetime(tzinfo=UTC) - at) < timedelta(milliseconds=1)
    delayed = (await client.enqueue_job("test.noop", delay="2h")).job
    # the server turns a delay into an absolute start
    due = delayed.next_run_time.ToDatetime(tzinfo=UTC) - delayed.create_time.ToDatetime(tzinfo=UTC)
    assert due == timedelta(hours=2)
    cron = (await client.enqueue_job("test.noop", cron="0 9 * * *", time_zone="Europe/Paris")).job
    assert cron.recurring and cron.schedule.time_zone == "Europe/Paris"
    every = (await client.enqueue_job("test.noop", every=timedelta(minutes=5), limit=3)).job
    assert every.schedule.interval.seconds == 300 and every.schedule.limit == 3


async def test_idempotency_key(client: AsyncClient) -> None:
    first = await client.enqueue_job("test.noop", idempotency_key="k1", delay="1h")
    again = await client.enqueue_job("test.noop", idempotency_key="k1", delay="1h")
    assert again.already_exists and again.job.id == first.job.id


async def test_batch_and_paginated_iteration(client: AsyncClient) -> None:
    reqs = [enqueue_request("test.noop", payload={"i": i}, queue="q", delay="1h") for i in range(7)]
    results = await client.batch_enqueue_jobs(reqs)
    ids = [r.job.id for r in results]
    await client.enqueue_job("test.noop", queue="other", delay="1h")
    seen = [j.id async for j in client.iter_jobs(queues=["q"], page_size=2, order=1)]
    assert seen == ids
    limited = [j.id async for j in client.iter_jobs(queues=["q"], page_size=2, limit=3)]
    assert len(limited) == 3
    page = await client.list_jobs(queues=["q"], payload={"i": 4}, states=["scheduled"])
    assert [j.id for j in page.jobs] == [ids[4]] and not page.next_page_token


async def test_invalid_argument_has_violations(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as info:
        await client.enqueue_job("", cron="61 * * * *")
    fields = {v.field for v in info.value.violations}
    assert "task" in fields and "schedule.cron" in fields
    assert "task" in str(info.value)


async def test_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFound):
        await client.get_job("0190c7f5-0000-7000-8000-000000000000")
    with pytest.raises(NotFound):
        await client.list_job_attempts("0190c7f5-0000-7000-8000-000000000000")


async def test_event_subscriptions(client: AsyncClient) -> None:
    secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
    sub = await client.create_event_subscription(
        "https://example.com/hooks", ["completed", "job.failed"], secret
    )
    assert sorted(sub.event_types) == [
        job_pb2.JOB_EVENT_TYPE_COMPLETED,
        job_pb2.JOB_EVENT_TYPE_FAILED,
    ]
    assert [s.id for s in await client.list_event_subscriptions()] == [sub.id]
    with pytest.raises(InvalidArgument) as info:
        await client.create_event_subscription("ftp://x", ["completed"], secret)
    assert [v.field for v in info.value.violations] == ["url"]
    await client.delete_event_subscription(sub.id)
    with pytest.raises(NotFound):
        await client.delete_event_subscription(sub.id)


async def test_bulk_actions_on_every_job_need_all(client: AsyncClient) -> None:
    for _ in range(2):
        await client.enqueue_job("test.noop", delay="1h")
    with pytest.raises(InvalidArgument) as info:
        await client.pause_jobs()
    assert "filter" in {v.field for v in info.value.violations}
    every_state = [s for s in job_pb2.JobState.values() if s != job_pb2.JOB_STATE_UNSPECIFIED]
    with pytest.raises(InvalidArgument):
        await client.delete_jobs(states=every_state)
    assert await client.pause_jobs(all=True) == 2
    assert await client.resume_jobs(states=every_state, all=True) == 2
    assert await client.cancel_jobs(all=True, reason="clean slate") == 2
    assert await client.retry_jobs(all=True, delay="1h") == 2
    assert await client.delete_jobs(queues=["default"], all=True) == 2
