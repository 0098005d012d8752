"""One trace follows a job: the EnqueueJob span, then every attempt, in-process, by webhook
and in a remote worker (the SDK continues the trace from its Lease)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.client.worker import Worker
from jobwheel.server.api.job_service import ENQUEUE_CHUNK
from jobwheel.server.observability import tracing
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.conftest import Running, running_server
from tests.integration.api.receiver import Receiver
from tests.integration.api.test_engine import FAST_RETRY, payload
from tests.integration.api.waiting import wait_for_state

ENQUEUE = "/jobwheel.v1.JobService/EnqueueJob"
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (one per process) exports into memory."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
async def server(db_url: str, spans: InMemorySpanExporter) -> AsyncIterator[Running]:
    async with running_server(db_url, webhook_allow=("127.0.0.0/8",)) as running:
        yield running


def enqueue_span(spans: InMemorySpanExporter, job_id: str) -> ReadableSpan:
    """The EnqueueJob server span whose trace the job's attempts join."""
    attempts = [s for s in spans.get_finished_spans() if job_attr(s) == job_id]
    assert attempts, "no attempt span"
    trace_id = attempts[0].context.trace_id
    [span] = [
        s
        for s in spans.get_finished_spans()
        if s.name == ENQUEUE and s.context.trace_id == trace_id
    ]
    return span


def job_attr(span: ReadableSpan) -> object:
    return (span.attributes or {}).get("jobwheel.job.id")


async def attempt_spans(spans: InMemorySpanExporter, job_id: str, count: int) -> list[ReadableSpan]:
    for _ in range(500):  # a span ends just after the job's state changed
        found = [s for s in spans.get_finished_spans() if job_attr(s) == job_id]
        if len(found) >= count:
            return sorted(found, key=lambda s: s.start_time or 0)
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} attempt spans of {job_id}")


async def test_in_process_attempts_join_the_enqueue_trace(
    server: Running, spans: InMemorySpanExporter
) -> None:
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(
                task="test.flaky", payload=payload(succeed_on=2), retry_policy=FAST_RETRY
            )
        )
    ).job
    await wait_for_state(server.jobs, job.id)
    first, second = await attempt_spans(spans, job.id, 2)
    root = enqueue_span(spans, job.id)
    for span in (first, second):
        assert span.context.trace_id == root.context.trace_id
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.name == "attempt test.flaky"
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is not StatusCode.ERROR
    assert (first.attributes or {})["jobwheel.job.attempt"] == 1


async def test_client_trace_is_continued(server: Running, spans: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("caller") as caller:
        metadata = (("traceparent", tracing.current_traceparent()),)
        reply = await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="test.echo"), metadata=metadata
        )
    await wait_for_state(server.jobs, reply.job.id)
    [attempt] = await attempt_spans(spans, reply.job.id, 1)
    assert attempt.context.trace_id == caller.get_span_context().trace_id


async def test_webhook_gets_the_attempt_traceparent(
    server: Running, spans: InMemorySpanExporter, receiver: Receiver
) -> None:
    reply = await server.jobs.EnqueueJob(
        pb.EnqueueJobRequest(http=job_pb2.HttpTarget(url=receiver.url))
    )
    await wait_for_state(server.jobs, reply.job.id)
    [attempt] = await attempt_spans(spans, reply.job.id, 1)
    [(_, headers, _)] = receiver.requests
    lowered = {k.lower(): v for k, v in headers.items()}
    trace_id, span_id = lowered["traceparent"].split("-")[1:3]
    assert int(trace_id, 16) == attempt.context.trace_id
    assert int(span_id, 16) == attempt.context.span_id


async def test_remote_worker_continues_the_trace(
    server: Running, spans: InMemorySpanExporter
) -> None:
    worker = Worker(server.address, worker_id="traced-1", poll_wait=5.0)

    @worker.task("remote.traced")
    async def handle(payload: dict[str, object]) -> str:
        return "ok"

    run = asyncio.create_task(worker.run())
    try:
        reply = await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.traced"))
        await wait_for_state(server.jobs, reply.job.id)
    finally:
        await worker.stop(1.0)
        await run
    [attempt] = await attempt_spans(spans, reply.job.id, 1)
    root = enqueue_span(spans, reply.job.id)
    assert attempt.context.trace_id == root.context.trace_id
    assert attempt.parent is not None and attempt.parent.span_id == root.context.span_id
    assert (attempt.attributes or {})["jobwheel.worker.id"] == "traced-1"
    assert attempt.instrumentation_scope is not None
    assert attempt.instrumentation_scope.name == "jobwheel.client.worker"


@pytest.mark.parametrize("n", [3, ENQUEUE_CHUNK + 1])  # in one piece; in chunks on PostgreSQL
async def test_batch_enqueue_is_traced_and_its_jobs_join_the_trace(
    server: Running, spans: InMemorySpanExporter, n: int
) -> None:
    """The batch's reply goes out as built, through OpenTelemetry's interceptor too."""
    reqs = [pb.EnqueueJobRequest(task="test.echo", payload=payload(i=i)) for i in range(n)]
    reply = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    assert [r.job.payload for r in reply.results] == [payload(i=i) for i in range(n)]
    job_id = reply.results[-1].job.id  # in the last chunk
    await wait_for_state(server.jobs, job_id)
    [attempt] = await attempt_spans(spans, job_id, 1)
    [batch] = [
        s
        for s in spans.get_finished_spans()
        if s.name == "/jobwheel.v1.JobService/BatchEnqueueJobs"
        and s.context.trace_id == attempt.context.trace_id
    ]
    assert batch.status.status_code is not StatusCode.ERROR


async def test_health_checks_answer_and_are_not_traced(
    server: Running, spans: InMemorySpanExporter
) -> None:
    # OpenTelemetry's interceptor reads a streaming handler's replies with `async for`, which
    # grpc_health's Watch (it writes with context.write) does not give: Watch ended UNKNOWN
    stub = health_pb2_grpc.HealthStub(server.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest())
    first = await watch.read()
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    await server.jobs.ListJobs(pb.ListJobsRequest())  # traced: the spans are being exported
    names = [span.name for span in spans.get_finished_spans()]
    assert any("ListJobs" in name for name in names), names
    assert not any("grpc.health" in name for name in names), names  # probes are noise
