"""HTTP jobs and event deliveries against receivers that answer oddly (garbage headers, JSON
too deep to keep, bytes PostgreSQL cannot store, endless bodies, requests held), on a real
server and real local HTTP receivers on 127.0.0.1 (let past the SSRF guard with
webhook_allow, as the other suites do). Each attempt ends, and its end is stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import running_server
from tests.integration.api.helpers import field_violations
from tests.integration.api.waiting import wait_for_state

LOCAL = ("127.0.0.0/8",)
SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"

# path -> (status, headers, body); headers are written as latin-1, as http.server does
Reply = tuple[int, dict[str, str], bytes]


class Hooks:
    """A real HTTP/1.1 server whose replies are given per path, in order."""

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.release = threading.Event()  # lets the requests to /hold be answered
        self.holding = 0
        self.streamed = 0
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if self.path == "/hold":
                    hooks.holding += 1
                    hooks.release.wait(30)
                if self.path == "/endless":
                    hooks.requests.append((self.path, dict(self.headers), b""))
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"x" * 65536
                    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
                    try:
                        while not hooks.release.is_set():
                            self.wfile.write(frame)
                            hooks.streamed += len(chunk)
                    except OSError:
                        pass
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hooks.requests.append((self.path, dict(self.headers), body))
                queue = hooks.replies.get(self.path) or []
                status, headers, reply = queue.pop(0) if queue else (200, {}, b"{}")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            # 100 requests connect at once: the default backlog of 5 overflowed on a busy
            # machine, and the connections it dropped ended their jobs with a ReadError
            request_queue_size = 128

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def paths(self) -> list[str]:
        return [p for p, _, _ in self.requests]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    thread = threading.Thread(target=h.httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield h
    h.release.set()
    h.httpd.shutdown()
    h.httpd.server_close()


def quick_retries(max_attempts: int = 2) -> j.RetryPolicy:
    policy = j.RetryPolicy(max_attempts=max_attempts)
    policy.initial_backoff.FromMilliseconds(10)
    policy.max_backoff.FromMilliseconds(10)
    return policy


async def enqueue_http(server: Any, url: str, **kwargs: Any) -> j.Job:
    req = pb.EnqueueJobRequest(http=j.HttpTarget(url=url), **kwargs)
    job: j.Job = (await server.jobs.EnqueueJob(req)).job
    return job


async def attempts_of(server: Any, job_id: str) -> list[j.Attempt]:
    reply = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
    return list(reply.attempts)


# --- replies the executor cannot digest must still end the attempt --------------------------


async def test_garbage_retry_after_is_ignored_not_fatal(db_url: str, hooks: Hooks) -> None:
    # README "Handlers, HTTP jobs": "429 and 503 retry no sooner than `Retry-After`; other
    # statuses, timeouts and connection errors retry per the policy". A Retry-After that is not
    # delta-seconds or an HTTP date must count as absent: the attempt fails, the job retries.
    # "\xb2" (superscript two, sent as one latin-1 byte) passes str.isdigit() but not float().
    hooks.replies["/busy"] = [(503, {"Retry-After": "\u00b2"}, b"busy")]
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        job = await enqueue_http(server, hooks.url("/busy"), retry_policy=quick_retries())
        done = await wait_for_state(server.jobs, job.id, within=8)
        assert done.state == j.JOB_STATE_COMPLETED
        first, _ = await attempts_of(server, job.id)
        assert first.outcome == j.ATTEMPT_OUTCOME_FAILED
        assert first.error.startswith("HttpError: 503")


async def test_deeply_nested_json_reply_still_completes(db_url: str, hooks: Hooks) -> None:
    # README: "2xx succeeds (a JSON reply becomes the result)"; job.proto `result`: "an HTTP
    # response body larger than that is not kept as the result". A 200 whose body is JSON
    # nested too deep to keep (well under the 1 MiB read cap) is still a success.
    depth = 100_000
    hooks.replies["/deep"] = [(200, {}, b"[" * depth + b"]" * depth)]
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        job = await enqueue_http(server, hooks.url("/deep"), retry_policy=quick_retries(1))
        done = await wait_for_state(server.jobs, job.id, within=8)
        assert done.state == j.JOB_STATE_COMPLETED
        [attempt] = await attempts_of(server, job.id)
        assert attempt.outcome == j.ATTEMPT_OUTCOME_SUCCEEDED


async def test_nested_json_reply_that_the_api_can_return(db_url: str, hooks: Hooks) -> None:
    # README: "a JSON reply becomes the result"; GetJob must still answer (DESIGN.md 7:
    # "0 UNKNOWN, 0 INTERNAL"), and every protobuf runtime decodes what it returns.
    depth = 150
    hooks.replies["/nested"] = [(200, {}, b"[" * depth + b"]" * depth)]
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        job = await enqueue_http(server, hooks.url("/nested"), retry_policy=quick_retries(1))
        done = await wait_for_state(server.jobs, job.id, within=8)
        assert done.state == j.JOB_STATE_COMPLETED
        # and one such job does not break the listing of every job
        listed = await server.jobs.ListJobs(pb.ListJobsRequest())
        assert [x.id for x in listed.jobs] == [job.id]


@pytest.mark.parametrize("port", ["70000", "9" * 30, "0", "-1", "http"])
async def test_url_with_an_impossible_port_is_refused(db_url: str, port: str) -> None:
    # job.proto HttpTarget.url: "An absolute http or https URL"; a port outside 1-65535
    # makes none. Accepted, the job stayed RUNNING until its lease ran out.
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await enqueue_http(server, f"http://127.0.0.1:{port}/hook")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(err.value)) == {"http.url"}


async def test_attempt_errors_are_at_most_2048_characters(db_url: str) -> None:
    # job.proto Job.last_error and Attempt.error: "("Type: message", at most 2048 characters)".
    # A host name that cannot be resolved, in a URL within the 2048-character limit.
    host = ("a" * 60 + ".") * 33 + "invalid"
    url = f"http://{host}/hook"
    assert len(url) <= 2048
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        job = await enqueue_http(server, url, retry_policy=quick_retries(1))
        done = await wait_for_state(server.jobs, job.id, within=8)
        assert done.state == j.JOB_STATE_FAILED
        assert done.last_error.startswith("ConnectionError")
        assert len(done.last_error) <= 2048
        [attempt] = await attempts_of(server, job.id)
        assert len(attempt.error) <= 2048


async def test_error_body_with_nul_is_stored(db_url: str, hooks: Hooks) -> None:
    # README: "other statuses ... retry per the policy"; the attempt's end must be stored on
    # every backend whatever bytes the receiver sent back. PostgreSQL text refuses U+0000:
    # the ending failed there, and the job stayed RUNNING until its lease ran out.
    hooks.replies["/nul"] = [(500, {}, b"broken\x00reply")]
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        job = await enqueue_http(server, hooks.url("/nul"), retry_policy=quick_retries())
        done = await wait_for_state(server.jobs, job.id, within=8)
        assert done.state == j.JOB_STATE_COMPLETED
        first, _ = await attempts_of(server, job.id)
        assert first.outcome == j.ATTEMPT_OUTCOME_FAILED
        assert first.error == "HttpError: 500 Internal Server Error: broken\ufffdreply"


async def until_true(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_slow_receiver_does_not_starve_other_targets(db_url: str) -> None:
    # README flags: --queue-concurrency "attempts one process runs at once per queue" (256 by
    # default): a queue whose receiver hangs must not keep another queue's HTTP job, to a
    # healthy receiver, from being sent at all.
    slow, fast = Hooks(), Hooks()
    for h in (slow, fast):
        threading.Thread(target=h.httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        async with running_server(db_url, webhook_allow=LOCAL) as server:
            policy = quick_retries(1)
            hung = [
                pb.EnqueueJobRequest(
                    queue="slow", http=j.HttpTarget(url=slow.url("/hold")), retry_policy=policy
                )
                for _ in range(100)
            ]
            await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=hung))
            await until_true(lambda: slow.holding >= 100)
            req = pb.EnqueueJobRequest(
                queue="fast", http=j.HttpTarget(url=fast.url("/ok")), retry_policy=policy
            )
            req.timeout.FromSeconds(3)
            job = (await server.jobs.EnqueueJob(req)).job
            done = await wait_for_state(server.jobs, job.id, within=10)
            assert fast.paths() == ["/ok"]
            assert done.state == j.JOB_STATE_COMPLETED, done.last_error
            slow.release.set()
    finally:
        for h in (slow, fast):
            h.release.set()
            h.httpd.shutdown()
            h.httpd.server_close()


async def test_shutdown_during_a_webhook_loses_nothing(db_url: str, hooks: Hooks) -> None:
    # DESIGN.md 3: "At-least-once execution"; README: "an attempt whose executor vanished ...
    # the job runs again". A server stopped while the receiver still holds the request: the
    # next server on the same database sends it again, and it completes.
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        job = await enqueue_http(server, hooks.url("/hold"), retry_policy=quick_retries(1))
        await until_true(lambda: hooks.holding >= 1)
    hooks.release.set()
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        done = await wait_for_state(server.jobs, job.id, within=10)
        assert done.state == j.JOB_STATE_COMPLETED
        assert hooks.paths() == ["/hold", "/hold"]
        attempts = await attempts_of(server, job.id)
        assert [a.outcome for a in attempts] == [
            j.ATTEMPT_OUTCOME_LOST,
            j.ATTEMPT_OUTCOME_SUCCEEDED,
        ]


async def test_endless_reply_is_cut_and_the_attempt_ends(db_url: str, hooks: Hooks) -> None:
    # webhook.py / job.proto `result`: the response read is capped ("an HTTP response body
    # larger than that is not kept as the result"); a 200 that never ends still succeeds.
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        job = await enqueue_http(server, hooks.url("/endless"), retry_policy=quick_retries(1))
        done = await wait_for_state(server.jobs, job.id, within=10)
        assert done.state == j.JOB_STATE_COMPLETED and not done.HasField("result")
        assert hooks.streamed < 64 << 20  # the server stopped reading


def independent_verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """Standard Webhooks by hand: base64(HMAC-SHA256(key, "id.timestamp.body")), key the
    base64 after "whsec_", "v1," before each space-separated signature."""
    h = {k.lower(): v for k, v in headers.items()}
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = h["webhook-id"].encode() + b"." + h["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in h["webhook-signature"].split(" ")
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 60


async def test_signatures_match_an_independent_hmac(db_url: str, hooks: Hooks) -> None:
    # DESIGN.md 6: "webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>"; README:
    # an event delivery is signed with the subscription's own secret and webhook-id
    # "<subscription>:<revision>".
    other = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCBhdCBhbGwh"
    async with running_server(db_url, webhook_secrets=(SECRET,), webhook_allow=LOCAL) as server:
        sub = (
            await server.jobs.CreateEventSubscription(
                pb.CreateEventSubscriptionRequest(
                    url=hooks.url("/events"), event_types=[j.JOB_EVENT_TYPE_COMPLETED], secret=other
                )
            )
        ).subscription
        req = pb.EnqueueJobRequest(http=j.HttpTarget(url=hooks.url("/job")))
        req.payload.update({"name": "zoë ☃", "n": 1.5})
        job = (await server.jobs.EnqueueJob(req)).job
        await wait_for_state(server.jobs, job.id)
        await until_true(lambda: "/events" in hooks.paths())
    [(_, job_headers, job_body)] = [r for r in hooks.requests if r[0] == "/job"]
    independent_verify(SECRET, job_headers, job_body)
    assert json.loads(job_body)["payload"] == {"name": "zoë ☃", "n": 1.5}
    [(_, ev_headers, ev_body)] = [r for r in hooks.requests if r[0] == "/events"]
    independent_verify(other, ev_headers, ev_body)
    assert ev_headers["webhook-id"] == f"{sub.id}:{json.loads(ev_body)['revision']}"


async def test_event_accepted_with_a_deep_json_reply_is_not_redelivered(
    db_url: str, hooks: Hooks
) -> None:
    # job_service.proto CreateEventSubscription: each event is "retried with backoff until it
    # is accepted"; a 2xx is acceptance whatever its body says.
    depth = 100_000
    hooks.replies["/events"] = [(200, {}, b"[" * depth + b"]" * depth)] * 3
    async with running_server(db_url, webhook_allow=LOCAL) as server:
        await server.jobs.CreateEventSubscription(
            pb.CreateEventSubscriptionRequest(
                url=hooks.url("/events"), event_types=[j.JOB_EVENT_TYPE_ENQUEUED], secret=SECRET
            )
        )
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))
        await until_true(lambda: "/events" in hooks.paths())
        flt = j.JobFilter(queues=["jobwheel.events"])
        [delivery] = (await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))).jobs
        done = await wait_for_state(server.jobs, delivery.id, within=8)
        assert done.state == j.JOB_STATE_COMPLETED and done.attempt == 1, done.last_error
        assert hooks.paths() == ["/events"]
