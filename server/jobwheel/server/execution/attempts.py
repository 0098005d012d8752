"""One attempt of a claimed job on this process: its handler or its HTTP request, in a span
of the job's trace when it has one."""

from __future__ import annotations

from jobwheel.server import model
from jobwheel.server.engine_storage import EngineStore
from jobwheel.server.execution.inprocess import InProcessExecutor, TaskContext
from jobwheel.server.execution.webhook import WebhookExecutor
from jobwheel.server.model import AttemptOutcome
from jobwheel.server.observability import tracing
from jobwheel.server.rules.attempt import AttemptResult


async def run_attempt(
    job: model.Job,
    executor: InProcessExecutor,
    webhooks: WebhookExecutor | None,
    store: EngineStore,
) -> AttemptResult:
    """Runs the job's current attempt within its timeout (seconds from job.timeout) and
    returns how it ended; only CancelledError escapes."""
    limit = None if job.timeout is None else job.timeout / model.SECOND
    if not job.traceparent:  # no trace to continue: no span (tracing.attempt_span's rule)
        return await _attempt(job, limit, executor, webhooks, store)
    # a span in the trace of the job's enqueue
    with tracing.attempt_span(f"attempt {job.task}", job.traceparent, tracing.job_attributes(job)):
        result = await _attempt(job, limit, executor, webhooks, store)
        if result.outcome is not AttemptOutcome.SUCCEEDED:
            tracing.mark_failed(result.error)
        return result


async def _attempt(
    job: model.Job,
    limit: float | None,
    executor: InProcessExecutor,
    webhooks: WebhookExecutor | None,
    store: EngineStore,
) -> AttemptResult:
    if job.http is None:
        ctx = TaskContext(
            job_id=job.id,
            task=job.task,
            queue=job.queue,
            attempt=job.attempt,
            execution=job.execution_count,
            labels=job.labels,
        )
        return await executor.run(job.task, job.payload, ctx, limit)
    assert webhooks is not None  # a server without webhooks claims no HTTP job
    attempt_id = await store.attempt_id(job.id, job.execution_count, job.attempt)
    return await webhooks.run(job, attempt_id or f"{job.id}/{job.attempt}", limit)
