"""The jobwheel Python client: `Client` (blocking) and `AsyncClient` (asyncio).

from jobwheel.client import Client

with Client() as jw:  # $JOBWHEEL_SERVER or 127.0.0.1:50051
    job = jw.enqueue_job("send_email", payload={"to": "ada@example.com"}, delay="5m").job
    for failed in jw.iter_jobs(states=["failed"], queues=["emails"]):
        print(failed.id, failed.last_error)
"""

from jobwheel.client.aio import AsyncClient
from jobwheel.client.calls import EnqueueArgs, ScheduleArgs, enqueue_request, schedule
from jobwheel.client.connection import DEFAULT_SERVER, Connection, server_address
from jobwheel.client.convert import parse_duration, parse_time
from jobwheel.client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    JobwheelError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from jobwheel.client.filters import FilterArgs, job_filter, parse_state, state_name
from jobwheel.client.policy import Retry
from jobwheel.client.sync import Client

__all__ = [
    "DEFAULT_SERVER",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Connection",
    "DeadlineExceeded",
    "EnqueueArgs",
    "FailedPrecondition",
    "FieldViolation",
    "FilterArgs",
    "Internal",
    "InvalidArgument",
    "JobwheelError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Retry",
    "ScheduleArgs",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "enqueue_request",
    "job_filter",
    "parse_duration",
    "parse_state",
    "parse_time",
    "schedule",
    "server_address",
    "state_name",
]
