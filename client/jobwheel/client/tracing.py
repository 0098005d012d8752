"""Continuing a job's trace in a worker, when OpenTelemetry is installed (`jobwheel[otel]`).

A Lease carries the W3C traceparent of the EnqueueJob call that created the job; the worker
runs the attempt inside a span that is its child, using the process's tracer provider (set one
up as usual, e.g. with the OTEL_* variables and `opentelemetry-instrument`). Without
OpenTelemetry, or without a traceparent, nothing happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - exercised where the extra is missing
    trace = None  # type: ignore[assignment]

TRACER_NAME = "jobwheel.client.worker"


@contextlib.contextmanager
def attempt_span(lease: Any, worker_id: str) -> Iterator[None]:
    """A span around one leased attempt (a jobwheel.v1.Lease), in the job's trace."""
    if trace is None or not lease.traceparent:
        yield
        return
    parent = TraceContextTextMapPropagator().extract({"traceparent": lease.traceparent})
    job = lease.job
    attributes = {
        "jobwheel.job.id": job.id,
        "jobwheel.job.task": job.task,
        "jobwheel.job.queue": job.queue,
        "jobwheel.job.attempt": job.attempt,
        "jobwheel.worker.id": worker_id,
    }
    with trace.get_tracer(TRACER_NAME).start_as_current_span(
        f"attempt {job.task}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ):
        yield
