import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from jobwheel.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_ORDER_UNSPECIFIED: _ClassVar[JobOrder]
    JOB_ORDER_CREATE_TIME_ASC: _ClassVar[JobOrder]
    JOB_ORDER_CREATE_TIME_DESC: _ClassVar[JobOrder]

class WorkerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_KIND_UNSPECIFIED: _ClassVar[WorkerKind]
    WORKER_KIND_REMOTE: _ClassVar[WorkerKind]
    WORKER_KIND_SERVER: _ClassVar[WorkerKind]
JOB_ORDER_UNSPECIFIED: JobOrder
JOB_ORDER_CREATE_TIME_ASC: JobOrder
JOB_ORDER_CREATE_TIME_DESC: JobOrder
WORKER_KIND_UNSPECIFIED: WorkerKind
WORKER_KIND_REMOTE: WorkerKind
WORKER_KIND_SERVER: WorkerKind

class EnqueueJobRequest(_message.Message):
    __slots__ = ("queue", "task", "payload", "labels", "priority", "schedule", "retry_policy", "timeout", "idempotency_key", "http")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    queue: str
    task: str
    payload: _struct_pb2.Struct
    labels: _containers.ScalarMap[str, str]
    priority: int
    schedule: _job_pb2.Schedule
    retry_policy: _job_pb2.RetryPolicy
    timeout: _duration_pb2.Duration
    idempotency_key: str
    http: _job_pb2.HttpTarget
    def __init__(self, queue: _Optional[str] = ..., task: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., schedule: _Optional[_Union[_job_pb2.Schedule, _Mapping]] = ..., retry_policy: _Optional[_Union[_job_pb2.RetryPolicy, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., http: _Optional[_Union[_job_pb2.HttpTarget, _Mapping]] = ...) -> None: ...

class EnqueueJobResponse(_message.Message):
    __slots__ = ("job", "already_exists")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ALREADY_EXISTS_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    already_exists: bool
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., already_exists: _Optional[bool] = ...) -> None: ...

class BatchEnqueueJobsRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[EnqueueJobRequest]
    def __init__(self, jobs: _Optional[_Iterable[_Union[EnqueueJobRequest, _Mapping]]] = ...) -> None: ...

class BatchEnqueueJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EnqueueJobResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[EnqueueJobResponse, _Mapping]]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token", "order")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    page_size: int
    page_token: str
    order: JobOrder
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., order: _Optional[_Union[JobOrder, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class RetryJobRequest(_message.Message):
    __slots__ = ("id", "delay")
    ID_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    id: str
    delay: _duration_pb2.Duration
    def __init__(self, id: _Optional[str] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RetryJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class RescheduleJobRequest(_message.Message):
    __slots__ = ("id", "schedule")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    id: str
    schedule: _job_pb2.Schedule
    def __init__(self, id: _Optional[str] = ..., schedule: _Optional[_Union[_job_pb2.Schedule, _Mapping]] = ...) -> None: ...

class RescheduleJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class TriggerJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class TriggerJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class PauseJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class PauseJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class ResumeJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ResumeJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobAttemptsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobAttemptsResponse(_message.Message):
    __slots__ = ("attempts", "next_page_token", "total_executions", "successful_executions", "failed_executions")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSFUL_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    FAILED_EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[_job_pb2.Attempt]
    next_page_token: str
    total_executions: int
    successful_executions: int
    failed_executions: int
    def __init__(self, attempts: _Optional[_Iterable[_Union[_job_pb2.Attempt, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_executions: _Optional[int] = ..., successful_executions: _Optional[int] = ..., failed_executions: _Optional[int] = ...) -> None: ...

class GetJobStatsRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ...) -> None: ...

class QueueCount(_message.Message):
    __slots__ = ("queue", "count")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    count: int
    def __init__(self, queue: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class GetJobStatsResponse(_message.Message):
    __slots__ = ("total", "state_counts", "queue_counts", "success_rate", "completed_per_second", "run_duration_p50", "run_duration_p90", "run_duration_p99", "queue_counts_truncated")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RUN_DURATION_P50_FIELD_NUMBER: _ClassVar[int]
    RUN_DURATION_P90_FIELD_NUMBER: _ClassVar[int]
    RUN_DURATION_P99_FIELD_NUMBER: _ClassVar[int]
    QUEUE_COUNTS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    total: int
    state_counts: _containers.RepeatedCompositeFieldContainer[_job_pb2.StateCount]
    queue_counts: _containers.RepeatedCompositeFieldContainer[QueueCount]
    success_rate: float
    completed_per_second: float
    run_duration_p50: _duration_pb2.Duration
    run_duration_p90: _duration_pb2.Duration
    run_duration_p99: _duration_pb2.Duration
    queue_counts_truncated: bool
    def __init__(self, total: _Optional[int] = ..., state_counts: _Optional[_Iterable[_Union[_job_pb2.StateCount, _Mapping]]] = ..., queue_counts: _Optional[_Iterable[_Union[QueueCount, _Mapping]]] = ..., success_rate: _Optional[float] = ..., completed_per_second: _Optional[float] = ..., run_duration_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., run_duration_p90: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., run_duration_p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., queue_counts_truncated: _Optional[bool] = ...) -> None: ...

class WatchJobsRequest(_message.Message):
    __slots__ = ("filter", "include_snapshot", "since_revision", "max_batch")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SINCE_REVISION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    include_snapshot: bool
    since_revision: int
    max_batch: int
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ..., include_snapshot: _Optional[bool] = ..., since_revision: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_job_pb2.JobEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_job_pb2.JobEvent, _Mapping]]] = ...) -> None: ...

class WatchHeartbeat(_message.Message):
    __slots__ = ("revision", "time")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    revision: int
    time: _timestamp_pb2.Timestamp
    def __init__(self, revision: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SnapshotEnd(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class WatchJobsResponse(_message.Message):
    __slots__ = ("event", "heartbeat", "snapshot_end", "batch")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    event: _job_pb2.JobEvent
    heartbeat: WatchHeartbeat
    snapshot_end: SnapshotEnd
    batch: EventBatch
    def __init__(self, event: _Optional[_Union[_job_pb2.JobEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[WatchHeartbeat, _Mapping]] = ..., snapshot_end: _Optional[_Union[SnapshotEnd, _Mapping]] = ..., batch: _Optional[_Union[EventBatch, _Mapping]] = ...) -> None: ...

class PreviewScheduleRequest(_message.Message):
    __slots__ = ("schedule", "count", "after_time")
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    AFTER_TIME_FIELD_NUMBER: _ClassVar[int]
    schedule: _job_pb2.Schedule
    count: int
    after_time: _timestamp_pb2.Timestamp
    def __init__(self, schedule: _Optional[_Union[_job_pb2.Schedule, _Mapping]] = ..., count: _Optional[int] = ..., after_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FireTime(_message.Message):
    __slots__ = ("time", "local_time", "dst_gap", "dst_fold")
    TIME_FIELD_NUMBER: _ClassVar[int]
    LOCAL_TIME_FIELD_NUMBER: _ClassVar[int]
    DST_GAP_FIELD_NUMBER: _ClassVar[int]
    DST_FOLD_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    local_time: str
    dst_gap: bool
    dst_fold: bool
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., local_time: _Optional[str] = ..., dst_gap: _Optional[bool] = ..., dst_fold: _Optional[bool] = ...) -> None: ...

class PreviewScheduleResponse(_message.Message):
    __slots__ = ("fire_times",)
    FIRE_TIMES_FIELD_NUMBER: _ClassVar[int]
    fire_times: _containers.RepeatedCompositeFieldContainer[FireTime]
    def __init__(self, fire_times: _Optional[_Iterable[_Union[FireTime, _Mapping]]] = ...) -> None: ...

class CancelJobsRequest(_message.Message):
    __slots__ = ("filter", "reason", "all")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    reason: str
    all: bool
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ..., reason: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class CancelJobsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class PauseJobsRequest(_message.Message):
    __slots__ = ("filter", "all")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    all: bool
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class PauseJobsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ResumeJobsRequest(_message.Message):
    __slots__ = ("filter", "all")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    all: bool
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class ResumeJobsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class RetryJobsRequest(_message.Message):
    __slots__ = ("filter", "delay", "all")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    delay: _duration_pb2.Duration
    all: bool
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class RetryJobsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class DeleteJobsRequest(_message.Message):
    __slots__ = ("filter", "all")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    filter: _job_pb2.JobFilter
    all: bool
    def __init__(self, filter: _Optional[_Union[_job_pb2.JobFilter, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class DeleteJobsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues", "next_page_token")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[_job_pb2.Queue]
    next_page_token: str
    def __init__(self, queues: _Optional[_Iterable[_Union[_job_pb2.Queue, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PauseQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PauseQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: _job_pb2.Queue
    def __init__(self, queue: _Optional[_Union[_job_pb2.Queue, _Mapping]] = ...) -> None: ...

class ResumeQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResumeQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: _job_pb2.Queue
    def __init__(self, queue: _Optional[_Union[_job_pb2.Queue, _Mapping]] = ...) -> None: ...

class UpdateQueueRequest(_message.Message):
    __slots__ = ("name", "max_concurrency", "max_dispatches_per_second")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_DISPATCHES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_concurrency: int
    max_dispatches_per_second: float
    def __init__(self, name: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., max_dispatches_per_second: _Optional[float] = ...) -> None: ...

class UpdateQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: _job_pb2.Queue
    def __init__(self, queue: _Optional[_Union[_job_pb2.Queue, _Mapping]] = ...) -> None: ...

class EventSubscription(_message.Message):
    __slots__ = ("id", "url", "event_types", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    url: str
    event_types: _containers.RepeatedScalarFieldContainer[_job_pb2.JobEventType]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., url: _Optional[str] = ..., event_types: _Optional[_Iterable[_Union[_job_pb2.JobEventType, str]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateEventSubscriptionRequest(_message.Message):
    __slots__ = ("url", "event_types", "secret")
    URL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    url: str
    event_types: _containers.RepeatedScalarFieldContainer[_job_pb2.JobEventType]
    secret: str
    def __init__(self, url: _Optional[str] = ..., event_types: _Optional[_Iterable[_Union[_job_pb2.JobEventType, str]]] = ..., secret: _Optional[str] = ...) -> None: ...

class CreateEventSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: EventSubscription
    def __init__(self, subscription: _Optional[_Union[EventSubscription, _Mapping]] = ...) -> None: ...

class ListEventSubscriptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEventSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions",)
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[EventSubscription]
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[EventSubscription, _Mapping]]] = ...) -> None: ...

class DeleteEventSubscriptionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteEventSubscriptionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("seen_within", "page_size", "page_token")
    SEEN_WITHIN_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    seen_within: _duration_pb2.Duration
    page_size: int
    page_token: str
    def __init__(self, seen_within: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("id", "kind", "last_seen_time", "queues", "tasks", "jobs_held", "version", "seen_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    JOBS_HELD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SEEN_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: WorkerKind
    last_seen_time: _timestamp_pb2.Timestamp
    queues: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    jobs_held: int
    version: str
    seen_by: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[WorkerKind, str]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queues: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ..., jobs_held: _Optional[int] = ..., version: _Optional[str] = ..., seen_by: _Optional[str] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "next_page_token")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    next_page_token: str
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
