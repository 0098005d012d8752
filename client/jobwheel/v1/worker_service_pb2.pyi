import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from jobwheel.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseJobsRequest(_message.Message):
    __slots__ = ("worker_id", "queues", "tasks", "max_jobs", "lease_duration", "wait")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    queues: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    max_jobs: int
    lease_duration: _duration_pb2.Duration
    wait: _duration_pb2.Duration
    def __init__(self, worker_id: _Optional[str] = ..., queues: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ..., max_jobs: _Optional[int] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("job", "epoch", "expire_time", "traceparent")
    JOB_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    epoch: int
    expire_time: _timestamp_pb2.Timestamp
    traceparent: str
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., epoch: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class LeaseJobsResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class HeartbeatJobRequest(_message.Message):
    __slots__ = ("job_id", "epoch", "worker_id", "lease_duration", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    worker_id: str
    lease_duration: _duration_pb2.Duration
    progress: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., worker_id: _Optional[str] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., progress: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class HeartbeatJobResponse(_message.Message):
    __slots__ = ("expire_time", "cancel_requested", "cancel_reason")
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    expire_time: _timestamp_pb2.Timestamp
    cancel_requested: bool
    cancel_reason: str
    def __init__(self, expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_requested: _Optional[bool] = ..., cancel_reason: _Optional[str] = ...) -> None: ...

class CompleteJobRequest(_message.Message):
    __slots__ = ("job_id", "epoch", "worker_id", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    worker_id: str
    result: _struct_pb2.Value
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., worker_id: _Optional[str] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class CompleteJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class FailJobRequest(_message.Message):
    __slots__ = ("job_id", "epoch", "worker_id", "error", "retryable", "retry_after")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    worker_id: str
    error: str
    retryable: bool
    retry_after: _duration_pb2.Duration
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., worker_id: _Optional[str] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class FailJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "reason", "message", "current_state", "current_epoch")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    current_state: _job_pb2.JobState
    current_epoch: int
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., current_state: _Optional[_Union[_job_pb2.JobState, str]] = ..., current_epoch: _Optional[int] = ...) -> None: ...

class JobHeartbeat(_message.Message):
    __slots__ = ("job_id", "epoch", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    progress: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., progress: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class HeartbeatJobsRequest(_message.Message):
    __slots__ = ("worker_id", "lease_duration", "heartbeats")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_DURATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    lease_duration: _duration_pb2.Duration
    heartbeats: _containers.RepeatedCompositeFieldContainer[JobHeartbeat]
    def __init__(self, worker_id: _Optional[str] = ..., lease_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeats: _Optional[_Iterable[_Union[JobHeartbeat, _Mapping]]] = ...) -> None: ...

class HeartbeatJobsResult(_message.Message):
    __slots__ = ("job_id", "status", "expire_time", "cancel_requested", "cancel_reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: ItemStatus
    expire_time: _timestamp_pb2.Timestamp
    cancel_requested: bool
    cancel_reason: str
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancel_requested: _Optional[bool] = ..., cancel_reason: _Optional[str] = ...) -> None: ...

class HeartbeatJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HeartbeatJobsResult]
    def __init__(self, results: _Optional[_Iterable[_Union[HeartbeatJobsResult, _Mapping]]] = ...) -> None: ...

class JobCompletion(_message.Message):
    __slots__ = ("job_id", "epoch", "result")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    result: _struct_pb2.Value
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class CompleteJobsRequest(_message.Message):
    __slots__ = ("worker_id", "completions")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    completions: _containers.RepeatedCompositeFieldContainer[JobCompletion]
    def __init__(self, worker_id: _Optional[str] = ..., completions: _Optional[_Iterable[_Union[JobCompletion, _Mapping]]] = ...) -> None: ...

class JobReportResult(_message.Message):
    __slots__ = ("job_id", "status", "state")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: ItemStatus
    state: _job_pb2.JobState
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, _Mapping]] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ...) -> None: ...

class CompleteJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobReportResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobReportResult, _Mapping]]] = ...) -> None: ...

class JobFailure(_message.Message):
    __slots__ = ("job_id", "epoch", "error", "retryable", "retry_after")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    error: str
    retryable: bool
    retry_after: _duration_pb2.Duration
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class FailJobsRequest(_message.Message):
    __slots__ = ("worker_id", "failures")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    failures: _containers.RepeatedCompositeFieldContainer[JobFailure]
    def __init__(self, worker_id: _Optional[str] = ..., failures: _Optional[_Iterable[_Union[JobFailure, _Mapping]]] = ...) -> None: ...

class FailJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobReportResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobReportResult, _Mapping]]] = ...) -> None: ...

class JobRelease(_message.Message):
    __slots__ = ("job_id", "epoch")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    epoch: int
    def __init__(self, job_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReleaseJobsRequest(_message.Message):
    __slots__ = ("worker_id", "releases", "reason")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    releases: _containers.RepeatedCompositeFieldContainer[JobRelease]
    reason: str
    def __init__(self, worker_id: _Optional[str] = ..., releases: _Optional[_Iterable[_Union[JobRelease, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseJobsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[JobReportResult]
    def __init__(self, results: _Optional[_Iterable[_Union[JobReportResult, _Mapping]]] = ...) -> None: ...
