"""Typed exceptions for gRPC failures, with the google.rpc details the server attaches.

Callers catch `NotFound` or `FailedPrecondition` instead of comparing status codes, and
read field violations and ErrorInfo without touching protobuf `Any`s.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class JobwheelError(Exception):
    """Any failed call. `code` is the gRPC status code; `message` the server's text."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: list[Any] = details or []

    def __str__(self) -> str:
        name = str(self.code.name).lower().replace("_", " ")
        if not self.message:
            return name
        # server messages often say it already ("job 'x' not found")
        return self.message if name in self.message.lower() else f"{name}: {self.message}"


class InvalidArgument(JobwheelError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def violations(self) -> list[FieldViolation]:
        return [
            FieldViolation(v.field, v.description)
            for d in self.details
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]


class NotFound(JobwheelError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(JobwheelError):
    code = grpc.StatusCode.ALREADY_EXISTS


class _WithErrorInfo(JobwheelError):
    @property
    def reason(self) -> str:
        info = self._error_info()
        return info.reason if info else ""

    @property
    def metadata(self) -> dict[str, str]:
        info = self._error_info()
        return dict(info.metadata) if info else {}

    def _error_info(self) -> Any:
        for d in self.details:
            if isinstance(d, error_details_pb2.ErrorInfo):
                return d
        return None


class FailedPrecondition(_WithErrorInfo):
    """The job's state forbids the operation; `metadata` holds e.g. its current state."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(_WithErrorInfo):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(_WithErrorInfo):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(JobwheelError):
    code = grpc.StatusCode.UNAVAILABLE


class Aborted(JobwheelError):
    """The database rolled the call's transaction back for a concurrent one; retrying helps
    (a bulk call keeps the batches it committed before)."""

    code = grpc.StatusCode.ABORTED


class DeadlineExceeded(JobwheelError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(JobwheelError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(JobwheelError):
    code = grpc.StatusCode.CANCELLED


class PermissionDenied(JobwheelError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(JobwheelError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Internal(JobwheelError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[JobwheelError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        OutOfRange,
        ResourceExhausted,
        Unavailable,
        Aborted,
        DeadlineExceeded,
        Unimplemented,
        Cancelled,
        PermissionDenied,
        Unauthenticated,
        Internal,
    )
}

_DETAIL_TYPES = (
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.ResourceInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.DebugInfo,
)


@dataclass
class _Decoded:
    details: list[Any] = field(default_factory=list)
    message: str | None = None


def _decode(err: Any) -> _Decoded:
    """Unpacks the google.rpc.Status trailer; a call without one (or a broken one) has none."""
    try:
        status = rpc_status.from_call(err)
    except (ValueError, AttributeError, TypeError):
        return _Decoded()
    if status is None:
        return _Decoded()
    out = _Decoded(message=status.message)
    for packed in status.details:
        for kind in _DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                out.details.append(detail)
                break
    return out


def from_rpc_error(err: grpc.RpcError) -> JobwheelError:
    """The typed error for a failed sync or aio call."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details_text = err.details() if hasattr(err, "details") else str(err)
    decoded = _decode(err)
    message = decoded.message or details_text or ""
    cls = _BY_CODE.get(code, JobwheelError)
    error = cls(message, code=code, details=decoded.details)
    error.__cause__ = err
    return error


def cut_short(err: asyncio.CancelledError) -> BaseException:
    """What a call that ended in CancelledError raises: the CancelledError itself when the
    calling task is being cancelled, else Cancelled (the channel was closed under the call,
    by the client's close): a failed call, as the blocking client reports it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return err
    return Cancelled("the client was closed while the call was in flight")
