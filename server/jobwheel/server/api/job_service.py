"""jobwheel.v1.JobService: validate -> core -> convert. No SQL here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeAlias

import grpc
from google.protobuf import struct_pb2
from jobwheel.server import model
from jobwheel.server.api import pagination, reply_size, validate
from jobwheel.server.api.batch_validate import new_jobs_from_batch
from jobwheel.server.api.convert import (
    JOB_STATE_TO_PROTO,
    CreatedJobs,
    attempt_to_proto,
    job_to_proto,
    timestamp,
)
from jobwheel.server.api.encoded_reply import EncodedReply, encoded_replies
from jobwheel.server.api.errors import AlreadyExists, FieldViolation, InvalidArgument
from jobwheel.server.api.fields import check_text
from jobwheel.server.api.queue_rpcs import QueueRpcs
from jobwheel.server.api.subscription_rpcs import SubscriptionRpcs
from jobwheel.server.api.watch import Watcher
from jobwheel.server.api.worker_rpcs import WorkerRpcs
from jobwheel.server.core import Core
from jobwheel.server.errors import PermissionDenied
from jobwheel.server.execution.roster import Roster
from jobwheel.server.ids import new_id, new_ids
from jobwheel.server.rules import states as actions
from jobwheel.server.rules import triggers
from jobwheel.server.security import principal as access
from jobwheel.server.security.principal import narrow
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

MAX_BATCH = 10_000
# BatchEnqueueJobs: jobs per insert when a batch is created in chunks, each validated while the
# database inserts the one before (larger batches only; on SQLite while no other write waits)
ENQUEUE_CHUNK = 250
# replies of created jobs (its templates are shared by calls: one event loop, no locks)
_CREATED = CreatedJobs()
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class JobService(QueueRpcs, SubscriptionRpcs, WorkerRpcs, job_service_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        core: Core,
        limits: validate.Limits,
        watcher: Watcher,
        default_concurrency: int,
        roster: Roster | None = None,
    ) -> None:
        self.roster = roster
        self.core = core
        self.default_concurrency = default_concurrency
        self.limits = limits
        self.watcher = watcher

    async def EnqueueJob(self, request: pb.EnqueueJobRequest, context: Context) -> Any:
        errors = validate.Violations()
        payloads: list[struct_pb2.Struct | None] = []
        new = validate.new_job_from_proto(
            request, "", self.core.clock.now(), self.limits, errors, new_id(), payloads
        )
        errors.raise_if_any()
        access.check_queue(new.queue, "queue")
        [(job, existed)] = await self.core.enqueue([new])
        if existed:
            if not access.current().sees(job.queue):
                raise _key_held_elsewhere()
            return pb.EnqueueJobResponse(job=job_to_proto(job), already_exists=True)
        # a created job is the request as validated: its reply needs no conversion of the Job
        reply = pb.EnqueueJobResponse()
        _CREATED.fill(reply.job, new, payloads[0])
        return reply

    @encoded_replies
    async def BatchEnqueueJobs(self, request: pb.BatchEnqueueJobsRequest, context: Context) -> Any:
        if len(request.jobs) > MAX_BATCH:
            raise InvalidArgument([FieldViolation("jobs", f"at most {MAX_BATCH} jobs per call")])
        now = self.core.clock.now()
        ids = new_ids(len(request.jobs))
        if (
            len(request.jobs) > ENQUEUE_CHUNK
            and self.core.enqueues_in_chunks
            and not any(job.idempotency_key for job in request.jobs)
        ):
            return await self._enqueue_in_chunks(request.jobs, ids, now)
        errors = validate.Violations()
        payloads: list[struct_pb2.Struct | None] = []
        news = new_jobs_from_batch(request.jobs, ids, now, self.limits, errors, payloads)
        errors.raise_if_any()
        denied = _first_denied(news, 0, set())
        if denied is not None:
            raise denied
        # the reply must fit one message: judged before anything is created (built as bytes,
        # as long as the message's encoding)
        encoded = _CREATED.encoded(news, payloads)
        size, limit = len(encoded), reply_size.Budget().limit
        if size > limit:
            raise _reply_too_large()
        results = await self.core.enqueue(news) if news else []
        if not any(existed for _, existed in results):
            # every job created: the reply goes out as built (the ids its results name)
            return EncodedReply(pb.BatchEnqueueJobsResponse, encoded, ids)
        reply = pb.BatchEnqueueJobsResponse.FromString(encoded)
        _existing_replies(reply, results, size, limit)
        return reply

    async def _enqueue_in_chunks(
        self, reqs: Sequence[pb.EnqueueJobRequest], ids: list[str], now: model.Micros
    ) -> EncodedReply:
        """BatchEnqueueJobs of jobs without idempotency keys: each chunk is validated while
        the database inserts the one before (Core.enqueue_in_chunks). The outcome is the
        one-piece path's: every violation, else the first denied queue, else a reply too
        large, refuses the call and nothing is created."""
        errors = validate.Violations()
        payloads: list[struct_pb2.Struct | None] = []
        replies: list[bytes] = []

        def chunks() -> Iterator[list[model.NewJob]]:
            checked: set[str] = set()
            denied: PermissionDenied | None = None
            for first in range(0, len(reqs), ENQUEUE_CHUNK):
                end = first + ENQUEUE_CHUNK
                mark = len(payloads)
                news = new_jobs_from_batch(
                    reqs[first:end], ids[first:end], now, self.limits, errors, payloads, first
                )
                if denied is None:  # reported after any violation
                    denied = _first_denied(news, first, checked)
                if not errors.items and denied is None:  # else only checked, for the whole list
                    yield news  # encoded while the database inserts it
                    replies.append(_CREATED.encoded(news, payloads[mark:]))
            errors.raise_if_any()
            if denied is not None:
                raise denied
            if sum(map(len, replies)) > reply_size.Budget().limit:
                raise _reply_too_large()

        await self.core.enqueue_in_chunks(chunks())
        return EncodedReply(pb.BatchEnqueueJobsResponse, b"".join(replies), ids)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> Any:
        _require_id(request.id)
        job = access.visible(await self.core.get(request.id))
        return pb.GetJobResponse(job=self.explain(job, job_to_proto(job)))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> Any:
        size = pagination.page_size(request.page_size)
        errors = validate.Violations()
        flt = validate.filter_from_proto(request.filter, "filter", errors)
        if request.order not in pb.JobOrder.values():
            errors.add("order", f"unknown value {request.order}")
        errors.raise_if_any()
        descending = request.order != pb.JOB_ORDER_CREATE_TIME_ASC
        scope = (request.filter, int(descending))
        after = pagination.decode_token(request.page_token, *scope)
        budget = reply_size.Budget()
        jobs, more = await self.core.list_page(
            narrow(flt), limit=size, max_bytes=budget.limit, after_seq=after, descending=descending
        )
        # decoding and converting big documents takes a while: off the event loop
        page, last, full = await asyncio.to_thread(_job_page, jobs, budget)
        more = more or full
        token = pagination.encode_token(last, *scope) if more and last is not None else ""
        # the roster is read on the event loop; _job_page left room for the reasons
        return pb.ListJobsResponse(
            jobs=[self.explain(job, proto) for job, proto in page], next_page_token=token
        )

    async def ListJobAttempts(self, request: pb.ListJobAttemptsRequest, context: Context) -> Any:
        _require_id(request.job_id, "job_id")
        size = pagination.page_size(request.page_size)
        after = pagination.decode_token(request.page_token, request.job_id)
        cursor = None if after is None else (after >> 20, after & 0xFFFFF)
        budget = reply_size.Budget()
        history = await self.core.history(
            request.job_id, limit=size, max_bytes=budget.limit, after=cursor
        )
        access.visible(history.job)
        page = await asyncio.to_thread(_attempt_page, history.attempts, budget)
        more = history.more or len(page) < len(history.attempts)
        token = ""
        if more and page:
            token = pagination.encode_token(
                page[-1].execution << 20 | page[-1].number, request.job_id
            )
        return pb.ListJobAttemptsResponse(
            attempts=page,
            next_page_token=token,
            total_executions=history.job.execution_count,
            successful_executions=history.totals.succeeded,
            failed_executions=history.totals.failed,
        )

    async def WatchJobs(
        self, request: pb.WatchJobsRequest, context: Context
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        errors = validate.Violations()
        flt = validate.filter_from_proto(request.filter, "filter", errors)
        if not 0 <= request.max_batch <= MAX_WATCH_BATCH:
            errors.add("max_batch", f"must be between 0 and {MAX_WATCH_BATCH}")
        errors.raise_if_any()
        stream = self.watcher.stream(
            narrow(flt), request.include_snapshot, request.since_revision, request.max_batch
        )
        async for response in stream:
            yield response

    # -- one job ----------------------------------------------------------------------------

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> Any:
        _require_id(request.id)
        _check_reason(request.reason)
        await self._visible(request.id)
        job = await self.core.act_on(request.id, actions.cancel(request.reason))
        return pb.CancelJobResponse(job=job_to_proto(job))

    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> Any:
        _require_id(request.id)
        await self._visible(request.id)
        job = await self.core.act_on(request.id, actions.retry(_delay(request)))
        return pb.RetryJobResponse(job=job_to_proto(job))

    async def TriggerJob(self, request: pb.TriggerJobRequest, context: Context) -> Any:
        _require_id(request.id)
        await self._visible(request.id)
        job = await self.core.act_on(request.id, actions.TRIGGER)
        return pb.TriggerJobResponse(job=job_to_proto(job))

    async def PauseJob(self, request: pb.PauseJobRequest, context: Context) -> Any:
        _require_id(request.id)
        await self._visible(request.id)
        return pb.PauseJobResponse(
            job=job_to_proto(await self.core.act_on(request.id, actions.PAUSE))
        )

    async def ResumeJob(self, request: pb.ResumeJobRequest, context: Context) -> Any:
        _require_id(request.id)
        await self._visible(request.id)
        job = await self.core.act_on(request.id, actions.RESUME)
        return pb.ResumeJobResponse(job=job_to_proto(job))

    async def DeleteJob(self, request: pb.DeleteJobRequest, context: Context) -> Any:
        _require_id(request.id)
        await self._visible(request.id)
        await self.core.act_on(request.id, actions.DELETE)
        return pb.DeleteJobResponse()

    async def RescheduleJob(self, request: pb.RescheduleJobRequest, context: Context) -> Any:
        _require_id(request.id)
        await self._visible(request.id)
        if not request.HasField("schedule"):
            raise InvalidArgument([FieldViolation("schedule", "is required")])
        now = self.core.clock.now()
        errors = validate.Violations()
        schedule = validate.schedule_from_proto(request.schedule, "schedule", now, errors)
        errors.raise_if_any()
        next_run = validate.first_run(schedule, now, "schedule", errors)
        errors.raise_if_any()
        action = actions.reschedule(schedule, next_run, now)
        return pb.RescheduleJobResponse(
            job=job_to_proto(await self.core.act_on(request.id, action))
        )

    async def PreviewSchedule(self, request: pb.PreviewScheduleRequest, context: Context) -> Any:
        count = request.count or 10
        errors = validate.Violations()
        if not 0 < count <= MAX_PREVIEW:
            errors.add("count", f"must be between 1 and {MAX_PREVIEW}")
        if not request.HasField("schedule"):
            errors.add("schedule", "is required")
        now = self.core.clock.now()
        after = now
        if request.HasField("after_time"):
            after = validate.micros_of_timestamp(request.after_time, "after_time", errors) or now
            if not triggers.EARLIEST_FIRE <= after <= triggers.LATEST_FIRE:
                errors.add(
                    "after_time",
                    f"must be between 0001-01-03T00:00:00Z and {triggers.LATEST_FIRE_TEXT}",
                )
        schedule = validate.schedule_from_proto(
            request.schedule, "schedule", min(now, after), errors
        )
        errors.raise_if_any()
        if schedule.limit:
            count = min(count, schedule.limit)
        if schedule.recurring:
            start = schedule.start_time - 1 if schedule.start_time is not None else after
            fires = triggers.next_fires(schedule, max(start, after), count)
        else:
            at = schedule.start_time if schedule.start_time is not None else after
            fires = [triggers.Fire(at, triggers.local_time(at, schedule))]
        return pb.PreviewScheduleResponse(
            fire_times=[
                pb.FireTime(
                    time=timestamp(f.time),
                    local_time=f.local.isoformat(),
                    dst_gap=f.dst_gap,
                    dst_fold=f.dst_fold,
                )
                for f in fires
            ]
        )

    async def _visible(self, job_id: str) -> None:
        """NOT_FOUND for a job outside the caller's queues (one read, only when scoped)."""
        if access.current().queues is not None:
            access.visible(await self.core.get(job_id))

    # -- many jobs --------------------------------------------------------------------------

    async def CancelJobs(self, request: pb.CancelJobsRequest, context: Context) -> Any:
        flt = _bulk_filter(request)
        _check_reason(request.reason)
        count = await self.core.act_on_all(flt, actions.cancel(request.reason))
        return pb.CancelJobsResponse(count=count)

    async def PauseJobs(self, request: pb.PauseJobsRequest, context: Context) -> Any:
        return pb.PauseJobsResponse(
            count=await self.core.act_on_all(_bulk_filter(request), actions.PAUSE)
        )

    async def ResumeJobs(self, request: pb.ResumeJobsRequest, context: Context) -> Any:
        return pb.ResumeJobsResponse(
            count=await self.core.act_on_all(_bulk_filter(request), actions.RESUME)
        )

    async def RetryJobs(self, request: pb.RetryJobsRequest, context: Context) -> Any:
        flt = _bulk_filter(request)
        count = await self.core.act_on_all(flt, actions.retry(_delay(request)))
        return pb.RetryJobsResponse(count=count)

    async def DeleteJobs(self, request: pb.DeleteJobsRequest, context: Context) -> Any:
        return pb.DeleteJobsResponse(
            count=await self.core.act_on_all(_bulk_filter(request), actions.DELETE)
        )


def _job_page(
    jobs: Iterator[model.Job], budget: reply_size.Budget
) -> tuple[list[tuple[model.Job, job_pb2.Job]], int | None, bool]:
    """The jobs that fit `budget` with their protos, the last one's seq, and True if one did
    not. A QUEUED job is given room for a waiting_reason, set afterwards."""
    page: list[tuple[model.Job, job_pb2.Job]] = []
    last = None
    for job in jobs:
        proto = job_to_proto(job)
        room = reply_size.WAITING_REASON_BYTES if job.state is model.JobState.QUEUED else 0
        if not budget.take(proto, room) and page:
            return page, last, True  # this one starts the next page
        page.append((job, proto))
        last = job.seq
    return page, last, False


def _attempt_page(
    attempts: list[model.Attempt], budget: reply_size.Budget
) -> list[job_pb2.Attempt]:
    page: list[job_pb2.Attempt] = []
    for attempt in attempts:
        proto = attempt_to_proto(attempt)
        if not budget.take(proto) and page:
            break
        page.append(proto)
    return page


def _existing_replies(
    reply: pb.BatchEnqueueJobsResponse,
    results: list[tuple[model.Job, bool]],
    size: int,
    limit: int,
) -> None:
    """Replaces the reply of each job whose idempotency key was taken (`reply` holds the jobs
    as created, `size` bytes) by the existing job, whole while the reply has room, else only
    its id and state (an existing job may be larger than the request that named its key; the
    stub never is). A job of a queue the caller does not see is not shown at all."""
    sees = access.current().sees
    hidden = {
        i: pb.EnqueueJobResponse(already_exists=True)
        for i, (job, existed) in enumerate(results)
        if existed and not sees(job.queue)
    }
    for i, nothing in hidden.items():
        reply.results[i].CopyFrom(nothing)
    stubs = {
        i: pb.EnqueueJobResponse(
            job=job_pb2.Job(id=job.id, state=JOB_STATE_TO_PROTO[job.state]), already_exists=True
        )
        for i, (job, existed) in enumerate(results)
        if existed and i not in hidden
    }
    used = size + sum(
        reply_size.framed_size(stub) - reply_size.framed_size(reply.results[i])
        for i, stub in stubs.items()
    )
    for i, stub in stubs.items():
        whole = pb.EnqueueJobResponse(job=job_to_proto(results[i][0]), already_exists=True)
        extra = reply_size.framed_size(whole) - reply_size.framed_size(stub)
        if used + extra <= limit:
            used += extra
            reply.results[i].CopyFrom(whole)
        else:
            reply.results[i].CopyFrom(stub)


MAX_REASON = 1024
MAX_WATCH_BATCH = 1000
MAX_PREVIEW = 1000


def _require_id(job_id: str, field: str = "id") -> None:
    errors = validate.Violations()
    validate.check_id(job_id, field, errors)
    errors.raise_if_any()


def _check_reason(reason: str) -> None:
    errors = validate.Violations()
    check_text(reason, "reason", errors, max_chars=MAX_REASON)
    errors.raise_if_any()


def _delay(request: pb.RetryJobRequest | pb.RetryJobsRequest) -> int:
    if not request.HasField("delay"):
        return 0
    errors = validate.Violations()
    delay = validate.micros_of_duration(request.delay, "delay", errors, high=validate.MAX_WAIT)
    errors.raise_if_any()
    return delay or 0


def matches_every_job(flt: model.JobFilter) -> bool:
    """True for a filter that selects nothing out: empty, or every state and nothing else."""
    return flt.empty or (set(flt.states) == set(model.JobState) and replace(flt, states=()).empty)


def _bulk_filter(request: Any) -> model.JobFilter:
    """The request's filter, validated and limited to the caller's queues. A filter that
    matches every job needs `all` set (one wrong call must not change everything)."""
    errors = validate.Violations()
    flt = validate.filter_from_proto(request.filter, "filter", errors)
    if not errors.items and not request.all and matches_every_job(flt):
        errors.add(
            "filter",
            "matches every job: narrow it, or set `all` to act on every job on purpose",
        )
    errors.raise_if_any()
    return narrow(flt)


def _first_denied(
    news: list[model.NewJob], first: int, checked: set[str]
) -> PermissionDenied | None:
    """The refusal of the first of `news` (jobs[first]...) whose queue the caller may not use,
    or None; each queue is checked once (`checked`: those already passed)."""
    for i, new in enumerate(news, first):
        if new.queue not in checked:
            try:
                access.check_queue(new.queue, f"jobs[{i}].queue")
            except PermissionDenied as exc:
                return exc
            checked.add(new.queue)
    return None


def _reply_too_large() -> InvalidArgument:
    return InvalidArgument(
        [
            FieldViolation(
                "jobs",
                f"the reply (every job as created) would exceed {reply_size.MAX_MESSAGE_BYTES} "
                "bytes: send fewer or smaller jobs per call",
            )
        ]
    )


def _key_held_elsewhere() -> AlreadyExists:
    """An idempotency key held by a job of a queue the caller does not see: the key is taken,
    and nothing more is told of that job."""
    return AlreadyExists(
        "the idempotency key is held by a job outside the caller's queues",
        "IDEMPOTENCY_KEY_TAKEN",
    )
