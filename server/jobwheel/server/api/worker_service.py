"""jobwheel.v1.WorkerService: validate -> remote workers -> convert. No SQL here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2
from jobwheel.server import model
from jobwheel.server.api import reply_size, validate
from jobwheel.server.api.convert import JOB_STATE_TO_PROTO, job_to_proto, timestamp
from jobwheel.server.api.errors import api_error
from jobwheel.server.api.fields import check_text
from jobwheel.server.api.lease_reply import LeaseReplies
from jobwheel.server.errors import DomainError, LeaseNotHeld
from jobwheel.server.execution.remote import CALLER_GONE, Beat, RemoteWorkers, Report
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.security import principal as access
from jobwheel.v1 import worker_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2_grpc

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
MAX_JOBS = 1000
# items of one HeartbeatJobs, CompleteJobs or FailJobs call
MAX_BATCH = 1000
MAX_WAIT = 60 * model.SECOND
MAX_LEASE = 3600 * model.SECOND
MAX_RETRY_AFTER = 366 * 86_400 * model.SECOND
MAX_WORKER_ID = 255
# Longer error texts (whole tracebacks) are cut rather than rejected: refusing the report
# would leave the job RUNNING until its lease expires.
MAX_ERROR = 16_384
MAX_RELEASE_REASON = 1024  # characters of ReleaseJobsRequest.reason kept
# Answer a long-poll this long before the caller's deadline, so the answer arrives.
DEADLINE_MARGIN = 0.05


def _duration(
    d: duration_pb2.Duration, field: str, top: model.Micros, errors: validate.Violations
) -> model.Micros:
    return validate.micros_of_duration(d, field, errors, high=top) or 0


def _worker_id(value: str, errors: validate.Violations) -> None:
    if not check_text(
        value, "worker_id", errors, max_chars=MAX_WORKER_ID, identifier=True, required=True
    ):
        return
    if value.startswith(model.INPROCESS_PREFIX):
        # the server's own identities: its start-up recovery takes such attempts for dead
        errors.add("worker_id", f"must not start with {model.INPROCESS_PREFIX!r}")


def _attempt_ids(request: Any, errors: validate.Violations) -> None:
    validate.check_id(request.job_id, "job_id", errors)
    if request.epoch <= 0:
        errors.add("epoch", "must be positive (the epoch of the lease)")
    _worker_id(request.worker_id, errors)


class WorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self, remote: RemoteWorkers, limits: validate.Limits) -> None:
        self.remote = remote
        self.limits = limits

    async def _visible(self, job_id: str) -> None:
        """NOT_FOUND for a job outside a queue-scoped caller's queues, before a report could
        tell it anything about the job (one read, only when scoped)."""
        if access.current().queues is not None:
            job = await self.remote.store.get_job(job_id)
            if job is not None:
                access.visible(job)

    async def LeaseJobs(self, request: pb.LeaseJobsRequest, context: Context) -> Any:
        errors = validate.Violations()
        _worker_id(request.worker_id, errors)
        for name in ("queues", "tasks"):
            if len(getattr(request, name)) > validate.MAX_FILTER_VALUES:
                errors.add(name, f"at most {validate.MAX_FILTER_VALUES} values")
        errors.raise_if_any()
        for i, queue in enumerate(request.queues):
            validate.check_name(queue, f"queues[{i}]", errors)
        for i, task in enumerate(request.tasks):
            validate.check_name(task, f"tasks[{i}]", errors)
        if not 0 <= request.max_jobs <= MAX_JOBS:
            errors.add("max_jobs", f"must be between 0 and {MAX_JOBS}")
        lease = _duration(request.lease_duration, "lease_duration", MAX_LEASE, errors)
        wait = _duration(request.wait, "wait", MAX_WAIT, errors)
        errors.raise_if_any()
        queues = _leasable_queues(tuple(request.queues))
        owner = access.lease_owner(request.worker_id)
        wait_s = wait / model.SECOND
        remaining = context.time_remaining()
        if remaining is not None:
            wait_s = max(0.0, min(wait_s, remaining - DEADLINE_MARGIN))
        leased = await self.remote.lease(
            owner,
            queues=queues,
            tasks=tuple(request.tasks),
            limit=request.max_jobs or 1,
            lease=lease or model.DEFAULT_LEASE,
            wait=wait_s,
        )
        sent = leased
        if leased:
            # a caller gone before the reply reaches it (a worker stopping during its long
            # poll cancels it) gets nothing: its leases go back at once, not at their expiry
            context.add_done_callback(lambda done: self._unless_delivered(done, sent))
        budget = reply_size.Budget()
        reply = pb.LeaseJobsResponse()
        fill = LeaseReplies().fill
        for i, job in enumerate(leased):
            lease_pb = reply.leases.add()
            fill(lease_pb, job)
            # one lease always fits; once one does not, the rest wait for the next call
            if not budget.take(lease_pb):
                del reply.leases[-1]
                sent = leased[:i]  # what the caller gets (the callback reads it when done)
                await self.remote.release(leased[i:], "not sent: the LeaseJobs reply was full")
                break
        return reply

    def _unless_delivered(self, done: Context, sent: list[model.Job]) -> None:
        if done.cancelled():
            self.remote.give_back(sent, CALLER_GONE)

    async def HeartbeatJob(self, request: pb.HeartbeatJobRequest, context: Context) -> Any:
        errors = validate.Violations()
        _attempt_ids(request, errors)
        lease = _duration(request.lease_duration, "lease_duration", MAX_LEASE, errors)
        progress = None
        if request.HasField("progress"):
            _, progress = validate.json_document(
                request.progress, "progress", self.limits.max_payload_bytes, errors
            )
        errors.raise_if_any()
        await self._visible(request.job_id)
        beat = await self.remote.heartbeat(
            request.job_id,
            request.epoch,
            access.lease_owner(request.worker_id),
            lease or None,
            progress,
        )
        out = pb.HeartbeatJobResponse(
            cancel_requested=beat.cancel_requested, cancel_reason=beat.cancel_reason
        )
        if beat.expire_time is not None:
            out.expire_time.CopyFrom(timestamp(beat.expire_time))
        return out

    async def CompleteJob(self, request: pb.CompleteJobRequest, context: Context) -> Any:
        errors = validate.Violations()
        _attempt_ids(request, errors)
        result = None
        if request.HasField("result"):
            _, result = validate.json_document(
                request.result, "result", self.limits.max_payload_bytes, errors
            )
        errors.raise_if_any()
        await self._visible(request.job_id)
        job = await self.remote.complete(
            request.job_id, request.epoch, access.lease_owner(request.worker_id), result
        )
        return pb.CompleteJobResponse(job=job_to_proto(job))

    async def FailJob(self, request: pb.FailJobRequest, context: Context) -> Any:
        errors = validate.Violations()
        _attempt_ids(request, errors)
        retry_after = _duration(request.retry_after, "retry_after", MAX_RETRY_AFTER, errors)
        errors.raise_if_any()
        await self._visible(request.job_id)
        job = await self.remote.fail(
            request.job_id,
            request.epoch,
            access.lease_owner(request.worker_id),
            _error_text(request.error),
            retryable=request.retryable if request.HasField("retryable") else True,
            retry_after=retry_after,
        )
        return pb.FailJobResponse(job=job_to_proto(job))

    # -- batches: one call, one write, a status per item --------------------------------------

    def _document(
        self, item: Any, name: str, field: str, bad: dict[int, pb.ItemStatus], i: int
    ) -> tuple[bool, Any]:
        """The JSON field `name` of item `i` of the batch's `field` (None when unset), checked
        like a single report's; (False, None) when it is refused, with its status in `bad`."""
        if not item.HasField(name):
            return True, None
        found = validate.Violations()
        _, doc = validate.json_document(
            getattr(item, name), f"{field}[{i}].{name}", self.limits.max_payload_bytes, found
        )
        if found.items:
            bad[i] = _invalid(found)
            return False, None
        return True, doc

    async def HeartbeatJobs(self, request: pb.HeartbeatJobsRequest, context: Context) -> Any:
        _check_batch(request.worker_id, request.heartbeats, "heartbeats")
        errors = validate.Violations()
        lease = _duration(request.lease_duration, "lease_duration", MAX_LEASE, errors)
        errors.raise_if_any()
        bad = _item_checks(request.heartbeats, "heartbeats")
        beats: list[Beat] = []
        for i, item in enumerate(request.heartbeats):
            if i in bad:
                continue
            ok, progress = self._document(item, "progress", "heartbeats", bad, i)
            if not ok:
                continue
            beats.append(Beat(item.job_id, item.epoch, progress))
        owner = access.lease_owner(request.worker_id)
        done = iter(await self.remote.heartbeat_many(owner, beats, lease or None, _sees()))
        out = pb.HeartbeatJobsResponse()
        for i, item in enumerate(request.heartbeats):
            result = out.results.add(job_id=item.job_id)
            if i in bad:
                result.status.CopyFrom(bad[i])
                continue
            beat = next(done)
            if isinstance(beat, DomainError):
                result.status.CopyFrom(_status(beat))
                continue
            result.cancel_requested = beat.cancel_requested
            result.cancel_reason = beat.cancel_reason
            if beat.expire_time is not None:
                result.expire_time.CopyFrom(timestamp(beat.expire_time))
        return out

    async def CompleteJobs(self, request: pb.CompleteJobsRequest, context: Context) -> Any:
        _check_batch(request.worker_id, request.completions, "completions")
        bad = _item_checks(request.completions, "completions")
        reports: list[Report] = []
        for i, item in enumerate(request.completions):
            if i in bad:
                continue
            ok, result = self._document(item, "result", "completions", bad, i)
            if not ok:
                continue
            outcome = AttemptResult(model.AttemptOutcome.SUCCEEDED, result=result)
            reports.append(Report(item.job_id, item.epoch, outcome))
        out = pb.CompleteJobsResponse()
        await self._reports(request.worker_id, request.completions, reports, bad, out.results)
        return out

    async def FailJobs(self, request: pb.FailJobsRequest, context: Context) -> Any:
        _check_batch(request.worker_id, request.failures, "failures")
        bad = _item_checks(request.failures, "failures")
        reports: list[Report] = []
        for i, item in enumerate(request.failures):
            if i in bad:
                continue
            found = validate.Violations()
            retry_after = _duration(
                item.retry_after, f"failures[{i}].retry_after", MAX_RETRY_AFTER, found
            )
            if found.items:
                bad[i] = _invalid(found)
                continue
            outcome = AttemptResult(
                model.AttemptOutcome.FAILED,
                error=_error_text(item.error),
                retryable=item.retryable if item.HasField("retryable") else True,
                retry_after=retry_after,
            )
            reports.append(Report(item.job_id, item.epoch, outcome))
        out = pb.FailJobsResponse()
        await self._reports(request.worker_id, request.failures, reports, bad, out.results)
        return out

    async def ReleaseJobs(self, request: pb.ReleaseJobsRequest, context: Context) -> Any:
        _check_batch(request.worker_id, request.releases, "releases")
        bad = _item_checks(request.releases, "releases")
        why = "released by the worker"
        if request.reason:
            why += ": " + _error_text(request.reason)[:MAX_RELEASE_REASON]
        reports = [
            Report(item.job_id, item.epoch, None, why)
            for i, item in enumerate(request.releases)
            if i not in bad
        ]
        out = pb.ReleaseJobsResponse()
        await self._reports(request.worker_id, request.releases, reports, bad, out.results)
        return out

    async def _reports(
        self,
        worker_id: str,
        items: Sequence[Any],
        reports: list[Report],
        bad: dict[int, pb.ItemStatus],
        out: Any,
    ) -> None:
        """Settles `reports` and adds a result per item of `items` to `out` (the reply's
        repeated field, filled in place: a reply built from a list copies every item)."""
        owner = access.lease_owner(worker_id)
        done = iter(await self.remote.report_many(owner, reports, _sees()))
        for i, item in enumerate(items):
            result = out.add(job_id=item.job_id)
            if i in bad:
                result.status.CopyFrom(bad[i])
                continue
            job = next(done)
            if isinstance(job, DomainError):
                result.status.CopyFrom(_status(job))
            else:
                result.state = JOB_STATE_TO_PROTO[job.state]


def _error_text(error: str) -> str:
    """A reported error as stored: U+0000 cannot be stored and is replaced, a long text is
    cut (refusing the report would leave the job RUNNING until its lease expires)."""
    text = (error or "Error: failed (no message)").replace("\x00", "\ufffd")
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _check_batch(worker_id: str, items: Sequence[Any], field: str) -> None:
    """INVALID_ARGUMENT for what concerns the whole batch: its worker id and size."""
    errors = validate.Violations()
    _worker_id(worker_id, errors)
    if not items:
        errors.add(field, "needs at least one item")
    elif len(items) > MAX_BATCH:
        errors.add(field, f"at most {MAX_BATCH} items (got {len(items)})")
    errors.raise_if_any()


def _item_checks(items: Sequence[Any], field: str) -> dict[int, pb.ItemStatus]:
    """The status of each item whose job id or epoch is malformed, or whose job id an
    earlier item has, by index."""
    bad: dict[int, pb.ItemStatus] = {}
    seen: set[str] = set()
    for i, item in enumerate(items):
        errors = validate.Violations()
        validate.check_id(item.job_id, f"{field}[{i}].job_id", errors)
        if item.epoch <= 0:
            errors.add(f"{field}[{i}].epoch", "must be positive (the epoch of the lease)")
        if errors.items:
            bad[i] = _invalid(errors)
        elif item.job_id in seen:
            bad[i] = pb.ItemStatus(
                code=code_pb2.INVALID_ARGUMENT,
                reason="DUPLICATE_ITEM",
                message=f"{field}[{i}].job_id: repeats an earlier item's job id",
            )
        seen.add(item.job_id)
    return bad


def _invalid(errors: validate.Violations) -> pb.ItemStatus:
    message = "; ".join(f"{v.field}: {v.description}" for v in errors.items)
    return pb.ItemStatus(code=code_pb2.INVALID_ARGUMENT, reason="INVALID_ARGUMENT", message=message)


def _status(err: DomainError) -> pb.ItemStatus:
    """What the single-job call would have answered, as an item's status."""
    api = api_error(err)
    status = pb.ItemStatus(code=api.code, message=api.message)
    if isinstance(err, LeaseNotHeld):
        status.reason = "LEASE_NOT_HELD"
        status.current_state = JOB_STATE_TO_PROTO[err.job.state]
        status.current_epoch = err.job.epoch
    elif api.code == code_pb2.NOT_FOUND:
        status.reason = "NOT_FOUND"
    return status


def _sees() -> Callable[[str], bool] | None:
    """A queue-scoped caller's view: reports about other queues' jobs are NOT_FOUND."""
    principal = access.current()
    return principal.sees if principal.queues is not None else None


def _leasable_queues(requested: tuple[str, ...]) -> tuple[str, ...]:
    """The queues to lease from: all the caller's when none are named; PERMISSION_DENIED
    for a named queue outside its scope."""
    scope = access.current().queues
    if scope is None:
        return requested
    for i, queue in enumerate(requested):
        access.check_queue(queue, f"queues[{i}]")
    return requested or tuple(sorted(scope))
