"""Jobs with an HTTP target, end to end: signed requests to a real local HTTP server."""

from __future__ import annotations

import json

from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb
from standardwebhooks import Webhook

from tests.conftest import running_server
from tests.integration.api.receiver import Receiver
from tests.integration.api.waiting import wait_for_state

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_http_job_is_signed_and_its_reply_is_the_result(
    db_url: str, receiver: Receiver
) -> None:
    async with running_server(
        db_url, webhook_secrets=(SECRET,), webhook_allow=("127.0.0.0/8",)
    ) as server:
        req = pb.EnqueueJobRequest(http=j.HttpTarget(url=receiver.url, headers={"X-Team": "a"}))
        req.payload.update({"order": 42})
        job = (await server.jobs.EnqueueJob(req)).job
        done = await wait_for_state(server.jobs, job.id)
        assert done.state == j.JOB_STATE_COMPLETED
        assert done.result.struct_value["ok"] is True
        [(path, headers, body)] = receiver.requests
        Webhook(SECRET).verify(body, headers)  # raises on a bad signature
        sent = json.loads(body)
        attempts = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
        assert sent == {
            "jobId": job.id,
            "attemptId": attempts.attempts[0].id,
            "attemptNumber": 1,
            "execution": 1,
            "task": "http",
            "payload": {"order": 42},
        }
        assert path == "/hook" and headers["X-Team"] == "a"


async def test_gone_fails_at_once_and_retry_after_is_honoured(
    db_url: str, receiver: Receiver
) -> None:
    async with running_server(db_url, webhook_allow=("127.0.0.0/8",)) as server:
        receiver.replies.append((410, {}, b"gone"))
        job = (
            await server.jobs.EnqueueJob(pb.EnqueueJobRequest(http=j.HttpTarget(url=receiver.url)))
        ).job
        done = await wait_for_state(server.jobs, job.id)
        assert done.state == j.JOB_STATE_FAILED and done.attempt == 1
        assert done.last_error.startswith("HttpError: 410")

        receiver.replies.append((503, {"Retry-After": "1"}, b"busy"))
        policy = j.RetryPolicy(max_attempts=2)
        policy.initial_backoff.FromMilliseconds(10)
        job = (
            await server.jobs.EnqueueJob(
                pb.EnqueueJobRequest(http=j.HttpTarget(url=receiver.url), retry_policy=policy)
            )
        ).job
        done = await wait_for_state(server.jobs, job.id)
        assert done.state == j.JOB_STATE_COMPLETED
        history = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
        first, second = history.attempts
        gap = second.start_time.ToMicroseconds() - first.end_time.ToMicroseconds()
        assert gap >= 1_000_000


async def test_private_addresses_are_refused_without_an_allowlist(
    db_url: str, receiver: Receiver
) -> None:
    async with running_server(db_url) as server:
        job = (
            await server.jobs.EnqueueJob(pb.EnqueueJobRequest(http=j.HttpTarget(url=receiver.url)))
        ).job
        done = await wait_for_state(server.jobs, job.id)
        assert done.state == j.JOB_STATE_FAILED and done.last_error.startswith("SsrfBlocked")
        assert receiver.requests == []
