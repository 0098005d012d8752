"""Request building shared by the sync and async clients.

Each client method builds a `Call` here (which RPC, the request, how to unpack the
response, whether a retry is safe) so the two clients only differ in how they wait.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypedDict, TypeVar, cast

from google.protobuf.message import Message
from jobwheel.client.convert import DurationLike, TimeLike, to_duration, to_struct, to_timestamp
from jobwheel.client.filters import job_filter
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    request: Message
    unpack: Callable[[Any], T]
    # safe to send again after UNAVAILABLE: repeating it cannot do anything twice
    idempotent: bool


class ScheduleArgs(TypedDict, total=False):
    """Keyword form of Schedule. `at`/`delay` give the (first) run; `cron` or `every` repeat."""

    at: TimeLike
    delay: DurationLike
    cron: str
    time_zone: str
    every: DurationLike
    limit: int
    end_at: TimeLike
    jitter: DurationLike
    overlap_policy: int
    misfire_policy: int
    catchup_window: DurationLike
    dst_gap_policy: int
    dst_fold_policy: int


class EnqueueArgs(ScheduleArgs, total=False):
    """Keyword form of EnqueueJobRequest (besides the task)."""

    payload: Mapping[str, Any] | None
    queue: str
    labels: Mapping[str, str]
    priority: int
    schedule: job_pb2.Schedule
    retry_policy: job_pb2.RetryPolicy
    max_attempts: int
    timeout: DurationLike
    idempotency_key: str
    http: job_pb2.HttpTarget


_SCHEDULE_KEYS = frozenset(ScheduleArgs.__annotations__)
_ENQUEUE_KEYS = frozenset(EnqueueArgs.__annotations__)


def schedule(**args: Any) -> job_pb2.Schedule | None:
    """A Schedule from ScheduleArgs keywords; None when none is given (run now)."""
    unknown = set(args) - _SCHEDULE_KEYS
    if unknown:
        raise TypeError(f"unknown schedule argument(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in args.items() if v is not None}
    if not given:
        return None
    s = job_pb2.Schedule(
        cron=given.get("cron", ""),
        time_zone=given.get("time_zone", ""),
        limit=given.get("limit", 0),
        overlap_policy=given.get("overlap_policy", 0),
        misfire_policy=given.get("misfire_policy", 0),
        dst_gap_policy=given.get("dst_gap_policy", 0),
        dst_fold_policy=given.get("dst_fold_policy", 0),
    )
    for key, target in (("at", s.start_time), ("end_at", s.end_time)):
        if key in given:
            target.CopyFrom(to_timestamp(given[key]))
    for key, dtarget in (
        ("delay", s.delay),
        ("every", s.interval),
        ("jitter", s.jitter),
        ("catchup_window", s.catchup_window),
    ):
        if key in given:
            dtarget.CopyFrom(to_duration(given[key]))
    return s


def enqueue_request(task: str, **args: Any) -> pb.EnqueueJobRequest:
    """An EnqueueJobRequest from EnqueueArgs keywords (for `batch_enqueue_jobs` too)."""
    unknown = set(args) - _ENQUEUE_KEYS
    if unknown:
        raise TypeError(f"unknown enqueue argument(s): {', '.join(sorted(unknown))}")
    req = pb.EnqueueJobRequest(
        task=task,
        queue=args.get("queue") or "",
        priority=args.get("priority") or 0,
        idempotency_key=args.get("idempotency_key") or "",
    )
    if args.get("payload") is not None:
        req.payload.CopyFrom(to_struct(args["payload"]))
    req.labels.update(args.get("labels") or {})
    sched = args.get("schedule") or schedule(
        **{k: v for k, v in args.items() if k in _SCHEDULE_KEYS}
    )
    if sched is not None:
        req.schedule.CopyFrom(sched)
    if args.get("retry_policy") is not None:
        req.retry_policy.CopyFrom(args["retry_policy"])
    if args.get("max_attempts") is not None:
        req.retry_policy.max_attempts = args["max_attempts"]
    if args.get("timeout") is not None:
        req.timeout.CopyFrom(to_duration(args["timeout"]))
    if args.get("http") is not None:
        req.http.CopyFrom(args["http"])
    return req


def _job(resp: Any) -> job_pb2.Job:
    job: job_pb2.Job = resp.job
    return job


def _queue(resp: Any) -> job_pb2.Queue:
    queue: job_pb2.Queue = resp.queue
    return queue


def _count(resp: Any) -> int:
    return int(resp.count)


def _same(resp: Any) -> Any:
    return resp


def _filter(base: job_pb2.JobFilter | None, where: Mapping[str, Any]) -> job_pb2.JobFilter:
    return job_filter(base, **where)


def enqueue_job(task: str, args: Mapping[str, Any]) -> Call[pb.EnqueueJobResponse]:
    req = enqueue_request(task, **args)
    return Call("EnqueueJob", req, _same, idempotent=bool(req.idempotency_key))


def batch_enqueue_jobs(
    jobs: Iterable[pb.EnqueueJobRequest],
) -> Call[list[pb.EnqueueJobResponse]]:
    req = pb.BatchEnqueueJobsRequest(jobs=list(jobs))
    safe = bool(req.jobs) and all(j.idempotency_key for j in req.jobs)
    return Call("BatchEnqueueJobs", req, lambda r: list(r.results), idempotent=safe)


def get_job(job_id: str) -> Call[job_pb2.Job]:
    return Call("GetJob", pb.GetJobRequest(id=job_id), _job, idempotent=True)


def list_jobs(
    base: job_pb2.JobFilter | None,
    where: Mapping[str, Any],
    page_size: int,
    page_token: str,
    order: int,
) -> Call[pb.ListJobsResponse]:
    req = pb.ListJobsRequest(
        filter=_filter(base, where),
        page_size=page_size,
        page_token=page_token,
        order=cast(pb.JobOrder, order),
    )
    return Call("ListJobs", req, _same, idempotent=True)


def cancel_job(job_id: str, reason: str) -> Call[job_pb2.Job]:
    return Call("CancelJob", pb.CancelJobRequest(id=job_id, reason=reason), _job, False)


def retry_job(job_id: str, delay: DurationLike | None) -> Call[job_pb2.Job]:
    req = pb.RetryJobRequest(id=job_id)
    if delay is not None:
        req.delay.CopyFrom(to_duration(delay))
    return Call("RetryJob", req, _job, idempotent=False)


def reschedule_job(
    job_id: str, sched: job_pb2.Schedule | None, when: Mapping[str, Any]
) -> Call[job_pb2.Job]:
    s = sched or schedule(**when) or job_pb2.Schedule()
    return Call("RescheduleJob", pb.RescheduleJobRequest(id=job_id, schedule=s), _job, False)


def by_id(method: str, job_id: str) -> Call[job_pb2.Job]:
    """TriggerJob, PauseJob, ResumeJob: a request holding only the id, answering the job."""
    request_type = getattr(pb, f"{method}Request")
    return Call(method, request_type(id=job_id), _job, idempotent=False)


def delete_job(job_id: str) -> Call[None]:
    return Call("DeleteJob", pb.DeleteJobRequest(id=job_id), lambda _: None, idempotent=False)


def list_job_attempts(
    job_id: str, page_size: int, page_token: str
) -> Call[pb.ListJobAttemptsResponse]:
    req = pb.ListJobAttemptsRequest(job_id=job_id, page_size=page_size, page_token=page_token)
    return Call("ListJobAttempts", req, _same, idempotent=True)


def get_job_stats(
    base: job_pb2.JobFilter | None, where: Mapping[str, Any]
) -> Call[pb.GetJobStatsResponse]:
    req = pb.GetJobStatsRequest(filter=_filter(base, where))
    return Call("GetJobStats", req, _same, idempotent=True)


def preview_schedule(
    sched: job_pb2.Schedule | None, count: int, after: TimeLike | None, when: Mapping[str, Any]
) -> Call[list[pb.FireTime]]:
    req = pb.PreviewScheduleRequest(
        schedule=sched or schedule(**when) or job_pb2.Schedule(), count=count
    )
    if after is not None:
        req.after_time.CopyFrom(to_timestamp(after))
    return Call("PreviewSchedule", req, lambda r: list(r.fire_times), idempotent=True)


def bulk(
    method: str,
    base: job_pb2.JobFilter | None,
    where: Mapping[str, Any],
    **extra: Any,
) -> Call[int]:
    """CancelJobs, PauseJobs, ResumeJobs, RetryJobs, DeleteJobs: a filter in, a count out."""
    request_type = getattr(pb, f"{method}Request")
    req = request_type(filter=_filter(base, where))
    if extra.get("reason"):
        req.reason = extra["reason"]
    if extra.get("delay") is not None:
        req.delay.CopyFrom(to_duration(extra["delay"]))
    req.all = bool(extra.get("all"))  # needed when the filter matches every job
    return Call(method, req, _count, idempotent=False)


def list_queues(page_token: str) -> Call[pb.ListQueuesResponse]:
    req = pb.ListQueuesRequest(page_token=page_token)
    return Call("ListQueues", req, _same, idempotent=True)


def list_workers(page_token: str) -> Call[pb.ListWorkersResponse]:
    req = pb.ListWorkersRequest(page_token=page_token)
    return Call("ListWorkers", req, _same, idempotent=True)


def queue_op(method: str, name: str) -> Call[job_pb2.Queue]:
    """PauseQueue, ResumeQueue: setting a flag, so repeating it is harmless."""
    request_type = getattr(pb, f"{method}Request")
    return Call(method, request_type(name=name), _queue, idempotent=True)


def update_queue(
    name: str, max_concurrency: int | None, max_dispatches_per_second: float | None
) -> Call[job_pb2.Queue]:
    req = pb.UpdateQueueRequest(name=name)
    if max_concurrency is not None:
        req.max_concurrency = max_concurrency
    if max_dispatches_per_second is not None:
        req.max_dispatches_per_second = max_dispatches_per_second
    return Call("UpdateQueue", req, _queue, idempotent=True)


def watch_request(
    base: job_pb2.JobFilter | None,
    where: Mapping[str, Any],
    include_snapshot: bool,
    since_revision: int,
) -> pb.WatchJobsRequest:
    return pb.WatchJobsRequest(
        filter=_filter(base, where),
        include_snapshot=include_snapshot,
        since_revision=since_revision,
    )


def event_type(value: str | int) -> Any:
    """A JobEventType from its number, its full name or its short name ("completed")."""
    if isinstance(value, int):
        return value
    name = value.upper()
    if not name.startswith("JOB_EVENT_TYPE_"):
        name = f"JOB_EVENT_TYPE_{name.removeprefix('JOB.')}"
    return job_pb2.JobEventType.Value(name)


def create_event_subscription(
    url: str, event_types: Iterable[str | int], secret: str
) -> Call[pb.EventSubscription]:
    req = pb.CreateEventSubscriptionRequest(
        url=url, event_types=[event_type(t) for t in event_types], secret=secret
    )
    return Call("CreateEventSubscription", req, lambda r: r.subscription, idempotent=False)


def list_event_subscriptions() -> Call[list[pb.EventSubscription]]:
    return Call(
        "ListEventSubscriptions",
        pb.ListEventSubscriptionsRequest(),
        lambda r: list(r.subscriptions),
        idempotent=True,
    )


def delete_event_subscription(subscription_id: str) -> Call[None]:
    return Call(
        "DeleteEventSubscription",
        pb.DeleteEventSubscriptionRequest(id=subscription_id),
        lambda r: None,
        idempotent=False,
    )
