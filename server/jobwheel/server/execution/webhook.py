"""Execution of jobs with an `http` target: one signed HTTP request per attempt.

The whole exchange (resolve, connect, send, read) runs under the job's timeout. Redirects are
never followed: a 3xx could point the request past the SSRF guard's intent, and the signed
body was meant for the configured URL only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from jobwheel.server import failures, model
from jobwheel.server.execution.signing import Signer
from jobwheel.server.execution.ssrf import AddressPolicy, SsrfBlocked, guarded_client
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.observability import tracing
from jobwheel.server.rules.attempt import AttemptResult, result_problem

USER_AGENT = "jobwheel/0.1"
_ERROR_BODY_CHARS = 200
# Set by the executor; a target's own value for these is ignored.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "accept-encoding",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    # "whsec_<base64>" secrets; each signs every request, so a new one can be added before
    # the old one is retired.
    secrets: tuple[str, ...] = ()
    # CIDR networks let through the SSRF guard besides public addresses (on-prem, tests).
    allow_networks: tuple[str, ...] = ()
    # Seconds for the whole request when the job sets no timeout.
    default_timeout: float = 30.0
    max_response_bytes: int = 1 << 20
    # A ceiling on a target's Retry-After, in seconds.
    max_retry_after: float = 24 * 3600.0
    user_agent: str = USER_AGENT


def request_body(job: model.Job, attempt_id: str) -> str:
    return json.dumps(
        {
            "jobId": job.id,
            "attemptId": attempt_id,
            "attemptNumber": job.attempt,
            "execution": job.execution_count,
            "task": job.task,
            "payload": job.payload,
        },
        separators=(",", ":"),
    )


def parse_retry_after(value: str | None, now: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); 0 if unusable."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to str.isdigit, not to float
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_or_none(content: bytes) -> Any:
    """The body as JSON, or None when it is empty or not strict JSON (NaN is not), or nests
    too deep for the parser."""
    try:
        return json.loads(content, parse_constant=_reject_constant) if content else None
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError, UnicodeDecodeError
        return None


def _excerpt(content: bytes) -> str:
    return content.decode("utf-8", errors="replace").strip()[:_ERROR_BODY_CHARS]


class WebhookExecutor:
    """Runs attempts of jobs whose `http` target is set.

    Without `client`, requests go through an SSRF-guarded client built from the settings; an
    injected client bypasses the guard unless it comes from `ssrf.guarded_client`.
    """

    def __init__(
        self,
        settings: WebhookSettings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        on_delivery: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings or WebhookSettings()
        self._signer = Signer(self.settings.secrets)
        self._owns_client = client is None
        self._client = client or guarded_client(
            AddressPolicy.from_cidrs(self.settings.allow_networks)
        )
        self._clock = clock
        # told the status class ("2xx".."5xx") or "error" of every request sent (metrics)
        self.on_delivery = on_delivery

    def _delivered(self, status_class: str) -> None:
        if self.on_delivery is not None:
            self.on_delivery(status_class)

    def handles(self, job: model.Job) -> bool:
        return job.http is not None

    def _headers(
        self, target: model.HttpTarget, message_id: str, body: str, signer: Signer
    ) -> httpx.Headers:
        headers = httpx.Headers({"User-Agent": self.settings.user_agent})
        for name, value in target.headers.items():
            if name.lower() not in _RESERVED_HEADERS:
                headers[name] = value
        headers["Content-Type"] = "application/json"
        # Raw bytes are read and capped; compressed bodies could expand past the cap.
        headers["Accept-Encoding"] = "identity"
        headers.update(signer.headers(message_id, int(self._clock()), body))
        traceparent = tracing.current_traceparent()  # the attempt's span, when tracing
        if traceparent:
            headers["traceparent"] = traceparent
        return headers

    async def run(self, job: model.Job, attempt_id: str, time_limit: float | None) -> AttemptResult:
        """Runs one attempt; never raises except CancelledError when the caller cancels."""
        if job.http is None:
            return AttemptResult(
                AttemptOutcome.FAILED,
                error="WebhookError: the job has no http target",
                retryable=False,
            )
        try:
            body = request_body(job, attempt_id)
        except (ValueError, TypeError) as exc:
            return AttemptResult(
                AttemptOutcome.FAILED, error=f"InvalidRequest: {exc}", retryable=False
            )
        # The attempt id is the webhook-id: a retry is a new delivery with a new id.
        return await self.send(job.http, attempt_id, body, time_limit)

    async def send(
        self,
        target: model.HttpTarget,
        message_id: str,
        body: str,
        time_limit: float | None,
        signer: Signer | None = None,
        *,
        keep_result: bool = True,
    ) -> AttemptResult:
        """Sends one signed request (the server's secrets unless `signer` says otherwise);
        with `keep_result`, a 2xx reply's JSON body is the result. Never raises except
        CancelledError: whatever else goes wrong is the attempt's failure."""
        limit = self.settings.default_timeout if time_limit is None else time_limit
        try:
            request = self._client.build_request(
                target.method,
                target.url,
                content=body.encode(),
                headers=self._headers(target, message_id, body, signer or self._signer),
                timeout=httpx.Timeout(limit),
            )
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            return AttemptResult(
                AttemptOutcome.FAILED, error=f"InvalidRequest: {exc}", retryable=False
            )
        try:
            async with asyncio.timeout(limit):
                response = await self._client.send(request, stream=True, follow_redirects=False)
                try:
                    content, truncated = await self._read_capped(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            self._delivered("error")
            return AttemptResult(AttemptOutcome.TIMED_OUT, error=failures.timed_out(limit))
        except SsrfBlocked as exc:
            self._delivered("error")
            return AttemptResult(
                AttemptOutcome.FAILED, error=f"SsrfBlocked: {exc}", retryable=False
            )
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
            return AttemptResult(
                AttemptOutcome.FAILED, error=f"InvalidRequest: {exc}", retryable=False
            )
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            # httpx's "All connection attempts failed" says nowhere which target refused
            where = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
            if request.url.host not in detail:
                detail += f" ({where})"
            self._delivered("error")
            return AttemptResult(AttemptOutcome.FAILED, error=f"ConnectionError: {detail}")
        except Exception as exc:  # raised past the client's own errors: retried per the policy
            self._delivered("error")
            return AttemptResult(AttemptOutcome.FAILED, error=failures.summary(exc))
        self._delivered(f"{response.status_code // 100}xx")
        return self._outcome(response, content, truncated, keep_result)

    async def _read_capped(self, response: httpx.Response) -> tuple[bytes, bool]:
        """At most max_response_bytes of the body; True when more was left unread."""
        cap = self.settings.max_response_bytes
        if response.is_stream_consumed:  # built in memory, e.g. by a test transport
            return response.content[:cap], len(response.content) > cap
        content = bytearray()
        async for chunk in response.aiter_raw():
            content += chunk
            if len(content) > cap:
                return bytes(content[:cap]), True
        return bytes(content), False

    def _outcome(
        self, response: httpx.Response, content: bytes, truncated: bool, keep_result: bool
    ) -> AttemptResult:
        status = response.status_code
        if 200 <= status < 300:
            # A truncated body is never valid JSON; say nothing rather than guess.
            result = None if truncated or not keep_result else _json_or_none(content)
            if result is not None and result_problem(result, len(content)):
                result = None  # kept within the job's bounds: too large or deep to store
            return AttemptResult(AttemptOutcome.SUCCEEDED, result=result)
        error = f"HttpError: {status} {httpx.codes.get_reason_phrase(status)}".rstrip()
        if 300 <= status < 400:
            error += ": redirects are not followed"
            if location := response.headers.get("location"):
                error += f" (Location: {location[:_ERROR_BODY_CHARS]})"
        elif excerpt := _excerpt(content):
            error += f": {excerpt}"
        if status == 410:  # the receiver says this endpoint is gone for good
            return AttemptResult(AttemptOutcome.FAILED, error=error, retryable=False)
        retry_after = 0
        if status in (429, 503):
            seconds = parse_retry_after(response.headers.get("retry-after"), self._clock())
            retry_after = int(min(seconds, self.settings.max_retry_after) * 1_000_000)
        return AttemptResult(AttemptOutcome.FAILED, error=error, retry_after=retry_after)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
