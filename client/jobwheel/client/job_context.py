"""What a worker's handler sees: its job's payload as JSON data, a JobContext, and JobFailed
to control how a failure is retried."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2
from jobwheel.client.convert import DurationLike
from jobwheel.v1 import job_pb2


class JobFailed(Exception):
    """Raise from a handler to control the failure: no retry, or a minimum wait."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: DurationLike | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _plain(value: struct_pb2.Value) -> Any:
    """A Value as JSON data, like json_format.MessageToDict at a fraction of its cost (it
    runs for every job). JSON numbers travel as doubles; handlers get 5, not 5.0, when it is
    whole."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) <= 2**53 else n
    if kind == "struct_value":
        return payload_of(value.struct_value)
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None


def payload_of(payload: struct_pb2.Struct) -> dict[str, Any]:
    """A job's payload as the handler gets it (JSON data, whole numbers as int)."""
    return {k: _plain(v) for k, v in payload.fields.items()}


def error_text(exc: BaseException) -> str:
    """The "Type: message" form the server stores."""
    return f"{type(exc).__name__}: {exc}"


@dataclass
class JobContext:
    """What a handler knows about the attempt it runs."""

    job: job_pb2.Job
    epoch: int  # the lease's fencing number, sent back with every report
    worker_id: str
    cancel_reason: str = ""
    _cancelled: bool = False
    _progress: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def task(self) -> str:
        return self.job.task

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def attempt(self) -> int:
        """The attempt number within the execution, from 1."""
        return self.job.attempt

    @property
    def execution(self) -> int:
        return self.job.execution_count

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.job.labels)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, the lease was lost or the worker stops."""
        return self._cancelled

    def report_progress(self, progress: Mapping[str, Any]) -> None:
        """Sent with the next heartbeat; stored on the job and streamed to watchers."""
        self._progress = dict(progress)
