"""OpenTelemetry traces, when the `jobwheel[otel]` extra is installed.

Configured by the standard OTEL_* variables: tracing is on when a tracer provider is already
installed (e.g. by `opentelemetry-instrument`), or when OTEL_TRACES_EXPORTER or an OTLP
endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; then
OTEL_SERVICE_NAME (default `jobwheel-server`), OTEL_RESOURCE_ATTRIBUTES, the exporter's own
variables and OTEL_SDK_DISABLED apply as usual. Without the extra every function here is a
no-op, and jobs carry no trace context.

Each RPC gets a server span (opentelemetry-instrumentation-grpc). An enqueue stores the W3C
`traceparent` of its span with the job; every attempt is a span in that trace, and its context
goes on to the executor: a webhook gets it as the `traceparent` header, a remote worker in its
Lease.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

try:  # the optional extra
    from opentelemetry import trace
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is missing
    trace = None  # type: ignore[assignment]

TRACER_NAME = "jobwheel.server"
_PROPAGATOR: Any = TraceContextTextMapPropagator() if trace is not None else None


def available() -> bool:
    return trace is not None


def _wanted(env: dict[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "")
    if exporter.lower() == "none":
        return False
    return bool(
        exporter
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _provider_installed() -> bool:
    provider = trace.get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def configure(env: dict[str, str] | None = None) -> bool:
    """Sets up tracing from OTEL_* variables; True when RPCs and attempts are traced."""
    if trace is None:
        return False
    env = dict(os.environ if env is None else env)
    if _provider_installed():
        return True
    if not _wanted(env):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME", "jobwheel-server")}
    )  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME are read by Resource.create too
    provider = TracerProvider(resource=resource)
    for name in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = name.strip().lower()
        exporter: Any
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
            )
            if protocol.startswith("http"):
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            else:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[assignment]
                    OTLPSpanExporter,
                )
            exporter = OTLPSpanExporter()
        else:
            log.warning("OTEL_TRACES_EXPORTER %r is not supported; use otlp or console", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def shutdown() -> None:
    """Flushes spans still waiting for export."""
    if trace is not None:
        provider = trace.get_tracer_provider()
        flush = getattr(provider, "force_flush", None)
        if flush is not None:
            flush()


def server_interceptor() -> Any:
    """The grpc.aio interceptor that opens a span per RPC (continuing the caller's trace).
    Health checks are left out: a probe every few seconds is noise in a trace store, and the
    interceptor reads a streaming handler's replies with `async for`, which grpc_health's
    Watch (it writes with context.write) does not give: Watch ended UNKNOWN."""
    return aio_server_interceptor(filter_=filters.negate(filters.health_check()))  # type: ignore[no-untyped-call]


def current_traceparent() -> str:
    """The W3C traceparent of the active span ('' when there is none)."""
    if trace is None:
        return ""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


@contextlib.contextmanager
def attempt_span(
    name: str, traceparent: str, attributes: dict[str, Any]
) -> Iterator[dict[str, str]]:
    """A span for one attempt, child of the enqueue that `traceparent` names (a root span
    when it is empty). Yields the headers that carry the span's context onward."""
    if trace is None or not traceparent:
        yield {}
        return
    parent = _PROPAGATOR.extract({"traceparent": traceparent})
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        name, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ) as span:
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers)
        try:
            yield headers
        except BaseException as exc:
            span.record_exception(exc)
            raise


def job_attributes(job: Any) -> dict[str, Any]:
    """Span attributes of an attempt of `job` (a model.Job)."""
    return {
        "jobwheel.job.id": job.id,
        "jobwheel.job.task": job.task,
        "jobwheel.job.queue": job.queue,
        "jobwheel.job.attempt": job.attempt,
        "jobwheel.job.execution": job.execution_count,
    }


def mark_failed(description: str) -> None:
    """Marks the active span as failed (an attempt that ended in error)."""
    if trace is None:
        return
    span = trace.get_current_span()
    span.set_status(trace.Status(trace.StatusCode.ERROR, description[:200]))
