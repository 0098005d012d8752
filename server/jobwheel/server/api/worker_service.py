"""jobwheel.v1.WorkerService: validate -> remote workers -> convert. No SQL here."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from google.protobuf import duration_pb2
from google.protobuf.json_format import MessageToDict
from jobwheel.server import model
from jobwheel.server.api import reply_size, validate
from jobwheel.server.api.convert import job_to_proto, timestamp
from jobwheel.server.api.errors import rpc_errors
from jobwheel.server.engine import INPROCESS_PREFIX
from jobwheel.server.execution.remote import DEFAULT_LEASE, RemoteWorkers
from jobwheel.v1 import worker_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2_grpc

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
MAX_JOBS = 1000
MAX_WAIT = 60 * model.SECOND
MAX_LEASE = 3600 * model.SECOND
MAX_RETRY_AFTER = 366 * 86_400 * model.SECOND
MAX_WORKER_ID = 255
# Longer error texts (whole tracebacks) are cut rather than rejected: refusing the report
# would leave the job RUNNING until its lease expires.
MAX_ERROR = 16_384
# Answer a long-poll this long before the caller's deadline, so the answer arrives.
DEADLINE_MARGIN = 0.05


def _duration(
    d: duration_pb2.Duration, field: str, top: model.Micros, errors: validate.Violations
) -> model.Micros:
    value = validate.micros_of_duration(d, field, errors) or 0
    if value < 0:
        errors.add(field, "must not be negative")
    elif value > top:
        errors.add(field, f"must be at most {top // model.SECOND}s")
    return value


def _worker_id(value: str, errors: validate.Violations) -> None:
    if not value:
        errors.add("worker_id", "is required")
    elif len(value) > MAX_WORKER_ID:
        errors.add("worker_id", f"longer than {MAX_WORKER_ID} characters")
    elif value.startswith(INPROCESS_PREFIX):
        # the server's own identities: its start-up recovery takes such attempts for dead
        errors.add("worker_id", f"must not start with {INPROCESS_PREFIX!r}")


def _attempt_ids(request: Any, errors: validate.Violations) -> None:
    if not request.job_id:
        errors.add("job_id", "is required")
    if request.epoch <= 0:
        errors.add("epoch", "must be positive (the epoch of the lease)")
    _worker_id(request.worker_id, errors)


class WorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self, remote: RemoteWorkers, limits: validate.Limits) -> None:
        self.remote = remote
        self.limits = limits

    @rpc_errors
    async def LeaseJobs(self, request: pb.LeaseJobsRequest, context: Context) -> Any:
        errors = validate.Violations()
        _worker_id(request.worker_id, errors)
        for i, queue in enumerate(request.queues):
            validate.check_name(queue, f"queues[{i}]", errors)
        for i, task in enumerate(request.tasks):
            validate.check_name(task, f"tasks[{i}]", errors)
        if not 0 <= request.max_jobs <= MAX_JOBS:
            errors.add("max_jobs", f"must be between 0 and {MAX_JOBS}")
        lease = _duration(request.lease_duration, "lease_duration", MAX_LEASE, errors)
        wait = _duration(request.wait, "wait", MAX_WAIT, errors)
        errors.raise_if_any()
        wait_s = wait / model.SECOND
        remaining = context.time_remaining()
        if remaining is not None:
            wait_s = max(0.0, min(wait_s, remaining - DEADLINE_MARGIN))
        leased = await self.remote.lease(
            request.worker_id,
            queues=tuple(request.queues),
            tasks=tuple(request.tasks),
            limit=request.max_jobs or 1,
            lease=lease or DEFAULT_LEASE,
            wait=wait_s,
        )
        budget = reply_size.Budget()
        leases: list[pb.Lease] = []
        unsent: list[model.Job] = []
        for job in leased:
            lease_pb = pb.Lease(
                job=job_to_proto(job),
                epoch=job.attempt,
                expire_time=timestamp(job.lease_expire_time or 0),
            )
            # one lease always fits; once one does not, the rest wait for the next call
            if unsent or not budget.take(lease_pb):
                unsent.append(job)
            else:
                leases.append(lease_pb)
        if unsent:
            await self.remote.release(unsent, "not sent: the LeaseJobs reply was full")
        return pb.LeaseJobsResponse(leases=leases)

    @rpc_errors
    async def HeartbeatJob(self, request: pb.HeartbeatJobRequest, context: Context) -> Any:
        errors = validate.Violations()
        _attempt_ids(request, errors)
        lease = _duration(request.lease_duration, "lease_duration", MAX_LEASE, errors)
        progress = None
        if request.HasField("progress"):
            if request.progress.ByteSize() > self.limits.max_payload_bytes:
                errors.add("progress", f"is larger than {self.limits.max_payload_bytes} bytes")
            progress = validate.payload_dict(request.progress)
        errors.raise_if_any()
        beat = await self.remote.heartbeat(
            request.job_id, request.epoch, request.worker_id, lease or None, progress
        )
        out = pb.HeartbeatJobResponse(
            cancel_requested=beat.cancel_requested, cancel_reason=beat.cancel_reason
        )
        if beat.expire_time is not None:
            out.expire_time.CopyFrom(timestamp(beat.expire_time))
        return out

    @rpc_errors
    async def CompleteJob(self, request: pb.CompleteJobRequest, context: Context) -> Any:
        errors = validate.Violations()
        _attempt_ids(request, errors)
        result = None
        if request.HasField("result"):
            if request.result.ByteSize() > self.limits.max_payload_bytes:
                errors.add("result", f"is larger than {self.limits.max_payload_bytes} bytes")
            result = validate._json_numbers(MessageToDict(request.result))
        errors.raise_if_any()
        job = await self.remote.complete(request.job_id, request.epoch, request.worker_id, result)
        return pb.CompleteJobResponse(job=job_to_proto(job))

    @rpc_errors
    async def FailJob(self, request: pb.FailJobRequest, context: Context) -> Any:
        errors = validate.Violations()
        _attempt_ids(request, errors)
        retry_after = _duration(request.retry_after, "retry_after", MAX_RETRY_AFTER, errors)
        errors.raise_if_any()
        error = request.error or "Error: failed (no message)"
        if len(error) > MAX_ERROR:
            error = error[: MAX_ERROR - 1] + "…"
        job = await self.remote.fail(
            request.job_id,
            request.epoch,
            request.worker_id,
            error,
            retryable=request.retryable if request.HasField("retryable") else True,
            retry_after=retry_after,
        )
        return pb.FailJobResponse(job=job_to_proto(job))
