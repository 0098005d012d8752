"""The webhook executor against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme
from jobwheel.server import model
from jobwheel.server.execution.signing import Signer
from jobwheel.server.execution.ssrf import AddressPolicy, guarded_client
from jobwheel.server.execution.webhook import (
    WebhookExecutor,
    WebhookSettings,
    parse_retry_after,
    request_body,
)
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.rules.attempt import AttemptResult
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.ports import refused_port

OLD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
OTHER_SECRET = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA=="
LOCAL = ("127.0.0.0/8",)
NOW = 1_700_000_000.0

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Target:
    base: str
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)


def _routes(target: Target) -> dict[str, Callable[[], Reply]]:
    def slow() -> Reply:
        target.release.wait(10)
        return 200, {}, b"{}"

    return {
        "/ok": lambda: (200, {"Content-Type": "application/json"}, b'{"delivered":true,"n":3}'),
        "/text": lambda: (200, {}, b"thanks!"),
        "/nan": lambda: (200, {}, b'{"x":NaN}'),
        "/empty": lambda: (204, {}, b""),
        "/gone": lambda: (410, {}, b"gone for good"),
        "/busy": lambda: (429, {"Retry-After": "7"}, b""),
        "/busy-date": lambda: (503, {"Retry-After": formatdate(NOW + 120, usegmt=True)}, b""),
        "/busy-forever": lambda: (429, {"Retry-After": "99999999999"}, b""),
        "/unavailable": lambda: (503, {}, b"down"),
        "/error": lambda: (500, {}, b"boom " * 100),
        "/redirect": lambda: (302, {"Location": "/ok"}, b""),
        "/big": lambda: (200, {}, b'{"pad":"' + b"x" * (2 << 20) + b'"}'),
        "/slow": slow,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        target = self.server.target
        target.received.append(Received(self.command, self.path, dict(self.headers), body))
        target.arrived.set()
        route = _routes(target).get(self.path)
        status, headers, content = route() if route else (404, {}, b"no such route")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    target: Target

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that stop reading (capped bodies, timeouts) break the pipe


@pytest.fixture
def serve() -> Iterator[Callable[[ssl.SSLContext | None], Target]]:
    servers: list[_Server] = []

    def start(tls: ssl.SSLContext | None = None) -> Target:
        server = _Server(("127.0.0.1", 0), _Handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https" if tls else "http"
        server.target = Target(f"{scheme}://127.0.0.1:{server.server_address[1]}")
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.target

    yield start
    for server in servers:
        server.target.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def target(serve: Callable[[ssl.SSLContext | None], Target]) -> Target:
    return serve(None)


@pytest.fixture
async def executor() -> AsyncIterator[WebhookExecutor]:
    settings = WebhookSettings(secrets=(OLD_SECRET, NEW_SECRET), allow_networks=LOCAL)
    executor = WebhookExecutor(settings)
    yield executor
    await executor.aclose()


def make_job(url: str, method: str = "POST", headers: dict[str, str] | None = None) -> model.Job:
    return model.Job(
        id="job-1",
        queue="default",
        task="notify",
        payload={"to": "zoë@example.com", "n": 1},
        labels={},
        priority=0,
        state=model.JobState.RUNNING,
        schedule=None,
        retry_policy=model.RetryPolicy(),
        timeout=None,
        idempotency_key=None,
        http=model.HttpTarget(url, method, headers or {}),
        create_time=0,
        update_time=0,
        next_run_time=None,
        attempt=2,
        execution_count=1,
    )


async def run(executor: WebhookExecutor, url: str, time_limit: float | None = 5) -> AttemptResult:
    return await executor.run(make_job(url), "att-1", time_limit)


async def test_success_is_signed_with_every_secret(
    executor: WebhookExecutor, target: Target
) -> None:
    headers = {"X-Tenant": "acme", "Content-Type": "text/plain", "webhook-id": "forged"}
    job = make_job(target.base + "/ok", headers=headers)
    before = int(time.time())
    result = await executor.run(job, "att-7", 5)
    assert result == AttemptResult(AttemptOutcome.SUCCEEDED, result={"delivered": True, "n": 3})

    [got] = target.received
    assert (got.method, got.path) == ("POST", "/ok")
    assert json.loads(got.body) == {
        "jobId": "job-1",
        "attemptId": "att-7",
        "attemptNumber": 2,
        "execution": 1,
        "task": "notify",
        "payload": {"to": "zoë@example.com", "n": 1},
    }
    assert got.body.decode() == request_body(job, "att-7")  # compact, as signed
    assert b", " not in got.body and b": " not in got.body
    hdrs = {k.lower(): v for k, v in got.headers.items()}
    assert hdrs["content-type"] == "application/json"
    assert hdrs["user-agent"] == "jobwheel/0.1"
    assert hdrs["x-tenant"] == "acme"
    assert hdrs["host"] == target.base.removeprefix("http://")
    assert hdrs["webhook-id"] == "att-7"
    assert before <= int(hdrs["webhook-timestamp"]) <= int(time.time())
    assert len(hdrs["webhook-signature"].split(" ")) == 2
    for secret in (OLD_SECRET, NEW_SECRET):
        assert Webhook(secret).verify(got.body, got.headers) == json.loads(got.body)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(got.body, got.headers)


async def test_method_comes_from_the_target(executor: WebhookExecutor, target: Target) -> None:
    result = await executor.run(make_job(target.base + "/ok", method="PUT"), "att-1", 5)
    assert result.outcome is AttemptOutcome.SUCCEEDED
    assert target.received[0].method == "PUT"


@pytest.mark.parametrize("path", ["/text", "/nan", "/empty"])
async def test_success_without_json_has_no_result(
    executor: WebhookExecutor, target: Target, path: str
) -> None:
    assert await run(executor, target.base + path) == AttemptResult(AttemptOutcome.SUCCEEDED)


async def test_gone_is_not_retried(executor: WebhookExecutor, target: Target) -> None:
    assert await run(executor, target.base + "/gone") == AttemptResult(
        AttemptOutcome.FAILED, error="HttpError: 410 Gone: gone for good", retryable=False
    )


async def test_too_many_requests_retries_after_the_given_seconds(
    executor: WebhookExecutor, target: Target
) -> None:
    assert await run(executor, target.base + "/busy") == AttemptResult(
        AttemptOutcome.FAILED, error="HttpError: 429 Too Many Requests", retry_after=7_000_000
    )


async def test_retry_after_as_http_date_and_ceiling(target: Target) -> None:
    settings = WebhookSettings(allow_networks=LOCAL, max_retry_after=3600)
    executor = WebhookExecutor(settings, clock=lambda: NOW)
    try:
        result = await run(executor, target.base + "/busy-date")
        assert result == AttemptResult(
            AttemptOutcome.FAILED,
            error="HttpError: 503 Service Unavailable",
            retry_after=120_000_000,
        )
        result = await run(executor, target.base + "/busy-forever")
        assert result.retry_after == 3600 * 1_000_000
        result = await run(executor, target.base + "/unavailable")
        assert (result.retryable, result.retry_after) == (True, 0)
        assert result.error == "HttpError: 503 Service Unavailable: down"
    finally:
        await executor.aclose()


async def test_server_error_quotes_the_start_of_the_body(
    executor: WebhookExecutor, target: Target
) -> None:
    result = await run(executor, target.base + "/error")
    expected = "HttpError: 500 Internal Server Error: " + ("boom " * 100).strip()[:200]
    assert result == AttemptResult(AttemptOutcome.FAILED, error=expected)


async def test_redirects_are_not_followed(executor: WebhookExecutor, target: Target) -> None:
    result = await run(executor, target.base + "/redirect")
    assert result == AttemptResult(
        AttemptOutcome.FAILED,
        error="HttpError: 302 Found: redirects are not followed (Location: /ok)",
    )
    assert [r.path for r in target.received] == ["/redirect"]


async def test_slow_server_times_out(target: Target) -> None:
    settings = WebhookSettings(allow_networks=LOCAL, default_timeout=0.3)
    executor = WebhookExecutor(settings)
    try:
        started = time.monotonic()
        assert await run(executor, target.base + "/slow", time_limit=0.2) == AttemptResult(
            AttemptOutcome.TIMED_OUT, error="TimeoutError: exceeded 0.2s"
        )
        result = await run(executor, target.base + "/slow", time_limit=None)
        assert result == AttemptResult(
            AttemptOutcome.TIMED_OUT, error="TimeoutError: exceeded 0.3s"
        )
        assert time.monotonic() - started < 2
    finally:
        await executor.aclose()


async def test_cancel_abandons_the_request(executor: WebhookExecutor, target: Target) -> None:
    task = asyncio.create_task(run(executor, target.base + "/slow"))
    assert await asyncio.to_thread(target.arrived.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_connection_refused_is_retryable(executor: WebhookExecutor) -> None:
    with refused_port() as port:
        result = await run(executor, f"http://127.0.0.1:{port}/ok")
    assert result.outcome is AttemptOutcome.FAILED and result.retryable
    assert result.error.startswith("ConnectionError: ")
    assert result.error.endswith(f"(http://127.0.0.1:{port})")  # which target refused


async def test_unresolvable_host_is_a_connection_error(executor: WebhookExecutor) -> None:
    result = await run(executor, "http://does-not-exist.invalid/ok")
    assert result.outcome is AttemptOutcome.FAILED and result.retryable
    assert result.error.startswith("ConnectionError: cannot resolve does-not-exist.invalid")


async def test_oversize_response_is_capped(target: Target) -> None:
    executor = WebhookExecutor(WebhookSettings(allow_networks=LOCAL, max_response_bytes=1024))
    try:
        assert await run(executor, target.base + "/big") == AttemptResult(AttemptOutcome.SUCCEEDED)
        # the capped connection is dropped, not reused with unread bytes in it
        result = await run(executor, target.base + "/ok")
        assert result.result == {"delivered": True, "n": 3}
    finally:
        await executor.aclose()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_ssrf_guard_blocks_loopback_by_default(target: Target, host: str) -> None:
    executor = WebhookExecutor()
    try:
        port = target.base.rsplit(":", 1)[1]
        result = await run(executor, f"http://{host}:{port}/ok")
    finally:
        await executor.aclose()
    assert result.outcome is AttemptOutcome.FAILED and not result.retryable
    assert result.error.startswith(f"SsrfBlocked: {host.strip('[]')} resolves to a disallowed ")
    assert target.received == []


@pytest.mark.parametrize(
    "url", ["ftp://example.com/hook", "http://", "http://[::1/", "file:///etc/passwd"]
)
async def test_invalid_urls_fail_for_good(executor: WebhookExecutor, url: str) -> None:
    result = await run(executor, url)
    assert result.outcome is AttemptOutcome.FAILED and not result.retryable
    assert result.error.startswith("InvalidRequest: ")


async def test_job_without_http_target(executor: WebhookExecutor) -> None:
    job = make_job("http://127.0.0.1/")
    job.http = None
    result = await executor.run(job, "att-1", 1)
    assert (result.outcome, result.retryable) == (AttemptOutcome.FAILED, False)
    assert not executor.handles(job)


async def test_injected_client_and_clock() -> None:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[1, 2])

    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    executor = WebhookExecutor(
        WebhookSettings(secrets=(NEW_SECRET,)), client=client, clock=lambda: NOW
    )
    result = await run(executor, "https://hooks.example.com/in")
    await executor.aclose()  # an injected client is the caller's to close
    assert not client.is_closed
    await client.aclose()
    assert result == AttemptResult(AttemptOutcome.SUCCEEDED, result=[1, 2])
    assert seen[0].headers["webhook-timestamp"] == str(int(NOW))
    expected = Signer([NEW_SECRET]).headers("att-1", int(NOW), seen[0].content.decode())
    assert seen[0].headers["webhook-signature"] == expected["webhook-signature"]


async def test_unsigned_without_secrets(target: Target) -> None:
    executor = WebhookExecutor(WebhookSettings(allow_networks=LOCAL))
    try:
        assert (await run(executor, target.base + "/ok")).outcome is AttemptOutcome.SUCCEEDED
    finally:
        await executor.aclose()
    hdrs = {k.lower() for k in target.received[0].headers}
    assert {"webhook-id", "webhook-timestamp"} <= hdrs and "webhook-signature" not in hdrs


def test_bad_secret_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="secret #2"):
        WebhookExecutor(WebhookSettings(secrets=(OLD_SECRET, "whsec_")))


def test_signature_matches_the_spec_example() -> None:
    headers = Signer([OLD_SECRET]).headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 0.0),
        ("", 0.0),
        ("0", 0.0),
        (" 42 ", 42.0),
        ("-5", 0.0),
        ("soon", 0.0),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
        ("Wed, 15 Nov 2023 00:13:20", 7200.0),  # no zone: UTC; NOW is 22:13:20 on the 14th
    ],
)
def test_parse_retry_after(value: str | None, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


# --- https: the guard connects to the checked address, TLS still checks the hostname ---


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_https_verifies_the_hostname_not_the_address(
    serve: Callable[[ssl.SSLContext | None], Target], ca: trustme.CA
) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_tls)
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: sni.append(name)
    target = serve(server_tls)
    port = target.base.rsplit(":", 1)[1]
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    client = guarded_client(AddressPolicy.from_cidrs(LOCAL), resolver=resolver, verify=client_tls)
    executor = WebhookExecutor(WebhookSettings(secrets=(NEW_SECRET,)), client=client)
    try:
        ok = await run(executor, f"https://hooks.test:{port}/ok")
        wrong = await run(executor, f"https://other.test:{port}/ok")
    finally:
        await client.aclose()

    assert ok == AttemptResult(AttemptOutcome.SUCCEEDED, result={"delivered": True, "n": 3})
    assert target.received[0].headers["Host"] == f"hooks.test:{port}"
    assert wrong.outcome is AttemptOutcome.FAILED and wrong.retryable
    assert "CERTIFICATE_VERIFY_FAILED" in wrong.error
    assert len(target.received) == 1
    assert sni == ["hooks.test", "other.test"]
    assert lookups == ["hooks.test", "other.test"]


@pytest.mark.parametrize("headers", [{"X-A": "a\r\nX-Evil: 1"}, {"X A": "b"}, {"X-B": "c\n"}])
async def test_malformed_target_headers_are_never_sent(
    executor: WebhookExecutor, target: Target, headers: dict[str, str]
) -> None:
    result = await executor.run(make_job(target.base + "/ok", headers=headers), "att-1", 5)
    assert result.outcome is AttemptOutcome.FAILED and not result.retryable
    assert result.error.startswith("InvalidRequest: ")
    assert target.received == []
