"""Jobs with an HTTP target, end to end: signed requests to a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb
from standardwebhooks import Webhook

from tests.api.waiting import wait_for_state
from tests.conftest import running_server

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status, headers, reply = (
                    receiver.replies.pop(0) if receiver.replies else (200, {}, b'{"ok":true}')
                )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.httpd.serve_forever, daemon=True)
    thread.start()
    yield r
    r.httpd.shutdown()


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
