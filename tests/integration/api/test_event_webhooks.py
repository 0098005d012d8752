"""Event subscriptions: job events POSTed to a subscriber, signed with its secret, retried."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb
from standardwebhooks import Webhook

from tests.conftest import Running, fresh_pg_schema, running_server
from tests.integration.api.helpers import field_violations
from tests.integration.api.receiver import Receiver
from tests.integration.api.waiting import until, wait_for_state
from tests.integration.workers.helpers import error_info

SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


async def received(receiver: Receiver, n: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while len(receiver.requests) < n:
        assert time.monotonic() < deadline, f"{len(receiver.requests)} of {n} deliveries"
        await asyncio.sleep(0.05)


async def test_subscribed_events_are_delivered_signed(db_url: str, receiver: Receiver) -> None:
    async with running_server(db_url, webhook_allow=("127.0.0.0/8",)) as server:
        sub = (
            await server.jobs.CreateEventSubscription(
                pb.CreateEventSubscriptionRequest(
                    url=receiver.url,
                    event_types=[j.JOB_EVENT_TYPE_COMPLETED, j.JOB_EVENT_TYPE_FAILED],
                    secret=SECRET,
                )
            )
        ).subscription
        listed = await server.jobs.ListEventSubscriptions(pb.ListEventSubscriptionsRequest())
        assert [s.id for s in listed.subscriptions] == [sub.id]
        ok = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))).job
        await wait_for_state(server.jobs, ok.id)
        bad = (
            await server.jobs.EnqueueJob(
                pb.EnqueueJobRequest(task="test.boom", retry_policy=j.RetryPolicy(max_attempts=1))
            )
        ).job
        await wait_for_state(server.jobs, bad.id)
        await received(receiver, 2)
        # nothing else (ENQUEUED, STARTED...) was subscribed: once every event so far was
        # handed over, the two deliveries are all there are
        store, head = server.app.store, server.app.bus.head
        assert store is not None

        async def handed_over() -> bool:
            return (await store.delivery_cursor())[0] >= head

        await until(server, handed_over)
        flt = j.JobFilter(queues=["jobwheel.events"])
        deliveries = (await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))).jobs
        assert len(deliveries) == 2
        await asyncio.gather(*(wait_for_state(server.jobs, d.id) for d in deliveries))
        assert len(receiver.requests) == 2
        docs = []
        for _, headers, body in receiver.requests:
            Webhook(SECRET).verify(body, headers)
            doc = json.loads(body)
            assert headers["webhook-id"] == f"{sub.id}:{doc['revision']}"
            docs.append(doc)
        assert {(d["type"], d["job"]["id"]) for d in docs} == {
            ("job.completed", ok.id),
            ("job.failed", bad.id),
        }
        assert next(d for d in docs if d["type"] == "job.failed")["job"]["state"] == (
            "JOB_STATE_FAILED"
        )


async def test_a_refused_delivery_is_retried(db_url: str, receiver: Receiver) -> None:
    async with running_server(db_url, webhook_allow=("127.0.0.0/8",)) as server:
        await server.jobs.CreateEventSubscription(
            pb.CreateEventSubscriptionRequest(
                url=receiver.url, event_types=[j.JOB_EVENT_TYPE_ENQUEUED], secret=SECRET
            )
        )
        receiver.replies.append((500, {}, b"try later"))
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))
        await received(receiver, 2)
        first, second = receiver.requests
        assert first[1]["webhook-id"] == second[1]["webhook-id"]  # the same message, again
        deliveries = await server.jobs.ListJobs(
            pb.ListJobsRequest(filter=j.JobFilter(queues=["jobwheel.events"]))
        )
        [delivery] = deliveries.jobs
        done = await wait_for_state(server.jobs, delivery.id)
        assert done.state == j.JOB_STATE_COMPLETED and done.attempt == 2


@pytest.mark.parametrize(
    ("status", "headers", "state"),
    [
        (410, {}, j.JOB_STATE_FAILED),  # the endpoint is gone for good: no retry
        (503, {"Retry-After": "3600"}, j.JOB_STATE_RETRYING),  # no sooner than asked
    ],
)
async def test_a_delivery_follows_what_the_subscriber_answers(
    db_url: str, receiver: Receiver, status: int, headers: dict[str, str], state: int
) -> None:
    # README (HTTP jobs): "410 fails for good; 429 and 503 retry no sooner than
    # Retry-After"; deliveries retried a 410 fifty times and a 503 after their own backoff
    async with running_server(db_url, webhook_allow=("127.0.0.0/8",)) as server:
        await server.jobs.CreateEventSubscription(
            pb.CreateEventSubscriptionRequest(
                url=receiver.url, event_types=[j.JOB_EVENT_TYPE_ENQUEUED], secret=SECRET
            )
        )
        receiver.replies.append((status, headers, b"no"))
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))
        await received(receiver, 1)
        flt = j.JobFilter(queues=["jobwheel.events"])
        [delivery] = (await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))).jobs
        after = await wait_for_state(server.jobs, delivery.id, (state,))
        assert after.last_error.startswith(f"DeliveryFailed: HttpError: {status}")
        if state == j.JOB_STATE_RETRYING:
            wait = after.next_run_time.ToMicroseconds() - after.update_time.ToMicroseconds()
            assert wait >= 3600 * 10**6
        assert len(receiver.requests) == 1


async def test_subscription_bad_input_and_delete(server: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.CreateEventSubscription(
            pb.CreateEventSubscriptionRequest(url="ftp://example.com/x", secret="nope")
        )
    violations = field_violations(info.value)
    assert {"url", "event_types", "secret"} <= set(violations)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.DeleteEventSubscription(pb.DeleteEventSubscriptionRequest(id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    sub = (
        await server.jobs.CreateEventSubscription(
            pb.CreateEventSubscriptionRequest(
                url="https://example.com/hook",
                event_types=[j.JOB_EVENT_TYPE_CANCELLED],
                secret=SECRET,
            )
        )
    ).subscription
    await server.jobs.DeleteEventSubscription(pb.DeleteEventSubscriptionRequest(id=sub.id))
    listed = await server.jobs.ListEventSubscriptions(pb.ListEventSubscriptionsRequest())
    assert list(listed.subscriptions) == []


async def test_a_server_keeps_at_most_100_subscriptions(server: Running) -> None:
    def create(n: int) -> pb.CreateEventSubscriptionRequest:
        return pb.CreateEventSubscriptionRequest(
            url=f"https://example.com/hook/{n}",
            event_types=[j.JOB_EVENT_TYPE_FAILED],
            secret=SECRET,
        )

    created = [
        (await server.jobs.CreateEventSubscription(create(n))).subscription for n in range(100)
    ]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.CreateEventSubscription(create(100))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(info.value).reason == "TOO_MANY_SUBSCRIPTIONS"
    listed = await server.jobs.ListEventSubscriptions(pb.ListEventSubscriptionsRequest())
    assert len(listed.subscriptions) == 100
    # deleting one makes room for one
    await server.jobs.DeleteEventSubscription(pb.DeleteEventSubscriptionRequest(id=created[0].id))
    await server.jobs.CreateEventSubscription(create(100))
    with pytest.raises(grpc.aio.AioRpcError):
        await server.jobs.CreateEventSubscription(create(101))


@pytest.mark.postgres
async def test_event_subscription_limit_holds_under_concurrent_creates() -> None:
    # proto CreateEventSubscriptionRequest: "A server keeps at most 100: the 101st fails with
    # RESOURCE_EXHAUSTED"; ListEventSubscriptionsResponse: "Every subscription (at most 100)".
    async with fresh_pg_schema() as url, running_server(url) as server:

        def request() -> pb.CreateEventSubscriptionRequest:
            return pb.CreateEventSubscriptionRequest(
                url="http://127.0.0.1:9/hook",
                event_types=[j.JOB_EVENT_TYPE_COMPLETED],
                secret=SECRET,
            )

        for _ in range(80):
            await server.jobs.CreateEventSubscription(request())
        results = await asyncio.gather(
            *(server.jobs.CreateEventSubscription(request()) for _ in range(60)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
        listed = await server.jobs.ListEventSubscriptions(pb.ListEventSubscriptionsRequest())
        assert len(listed.subscriptions) <= 100
