"""Errors in their gRPC form: a status code plus google.rpc details.

Servicers raise the API errors below, core and executors the domain errors of errors.py;
`expected_status` turns both into rich statuses (BadRequest with one
field violation per offending field, ErrorInfo with the job's current state), which
grpcurl, buf curl and the generated clients of every language can decode. api/guard.py
applies it to every call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from jobwheel.server import errors as domain
from jobwheel.server.api.convert import JOB_STATE_TO_PROTO
from jobwheel.server.errors import QUOTE_CHARS, NotFound, clip, quote
from jobwheel.server.storage.outage import DatabaseUnavailable, is_conflict
from jobwheel.v1 import job_pb2
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)
__all__ = ["QUOTE_CHARS", "NotFound", "quote"]
DOMAIN = "jobwheel.dev"
OVERLOADED = "the server is overloaded (all database connections busy); retry with backoff"
UNAVAILABLE = "the database is unavailable; retry with backoff"
CONFLICT = (
    "the call's transaction met a concurrent one (deadlock or serialization failure) and was"
    " rolled back; retry it"
)
MAX_VIOLATIONS = 10


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ApiError(domain.DomainError):
    """An error raised by a servicer, with its status code and details."""

    code: int = code_pb2.UNKNOWN

    def details(self) -> list[Any]:
        return []


class InvalidArgument(ApiError):
    """One violation per offending field; a status keeps the first MAX_VIOLATIONS, clipped,
    so that it stays small whatever the request (a batch of 10,000 bad jobs included)."""

    code = code_pb2.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        kept = [
            FieldViolation(clip(v.field, 120), clip(v.description, 300))
            for v in violations[:MAX_VIOLATIONS]
        ]
        summary = "; ".join(f"{v.field}: {v.description}" for v in kept)
        if len(violations) > len(kept):
            summary += f"; and {len(violations) - len(kept)} more"
        super().__init__(f"invalid argument: {summary}")
        self.violations = kept

    def details(self) -> list[Any]:
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
        ]


class FailedPrecondition(ApiError):
    code = code_pb2.FAILED_PRECONDITION

    def __init__(self, message: str, reason: str, **metadata: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata

    def details(self) -> list[Any]:
        return [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        ]


class AlreadyExists(FailedPrecondition):
    code = code_pb2.ALREADY_EXISTS


class Unavailable(ApiError):
    """The server cannot serve the call now (e.g. it is stopping); another try may work."""

    code = code_pb2.UNAVAILABLE


class OutOfRange(FailedPrecondition):
    code = code_pb2.OUT_OF_RANGE


class ResourceExhausted(FailedPrecondition):
    code = code_pb2.RESOURCE_EXHAUSTED


def _state_name(state: Any) -> str:
    return job_pb2.JobState.Name(JOB_STATE_TO_PROTO[state])


def api_error(err: domain.DomainError) -> ApiError:
    """The API form of a domain error."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, NotFound):
        return _NotFound(err)
    if isinstance(err, domain.IllegalTransition):
        return FailedPrecondition(
            err.message,
            "ILLEGAL_TRANSITION",
            current_state=_state_name(err.state),
            action=err.action,
        )
    if isinstance(err, domain.LeaseNotHeld):
        job = err.job
        return FailedPrecondition(
            err.message,
            "LEASE_NOT_HELD",
            job_id=job.id,
            current_state=_state_name(job.state),
            current_epoch=str(job.epoch),
            current_worker_id=job.worker_id,
        )
    if isinstance(err, domain.InvalidField):
        return InvalidArgument([FieldViolation(err.field, err.description)])
    plain = ApiError(err.message)
    if isinstance(err, domain.PermissionDenied):
        plain.code = code_pb2.PERMISSION_DENIED
    elif isinstance(err, domain.Unauthenticated):
        plain.code = code_pb2.UNAUTHENTICATED
    return plain


class _NotFound(ApiError):
    code = code_pb2.NOT_FOUND

    def __init__(self, err: NotFound) -> None:
        super().__init__(err.message)
        self.kind, self.name = err.kind, err.name

    def details(self) -> list[Any]:
        return [error_details_pb2.ResourceInfo(resource_type=self.kind, resource_name=self.name)]


def to_grpc_status(err: domain.DomainError) -> grpc.Status:
    api = api_error(err)
    details = []
    for detail in api.details():
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    status = status_pb2.Status(code=api.code, message=api.message, details=details)
    return rpc_status.to_status(status)


def _plain(code: int, message: str) -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(code=code, message=message))


def expected_status(exc: Exception) -> grpc.Status | None:
    """The status an exception raised while serving a call answers with.

    The one exception -> status table of the server (api/guard.py applies it to every call).
    None means the exception was not expected: a bug, answered with INTERNAL and logged.
    UNAVAILABLE ("retrying will help") is for the server's own trouble, never a client's
    mistake; a client's mistake is an ApiError raised by validation.
    """
    if isinstance(exc, domain.DomainError):
        return to_grpc_status(exc)
    if isinstance(exc, DatabaseUnavailable):
        # an outage, not the caller's mistake: the same call works once the database is back
        return _plain(code_pb2.UNAVAILABLE, UNAVAILABLE)
    if isinstance(exc, sa_exc.TimeoutError):
        # every database connection is busy: the server is overloaded, the call can wait
        log.warning("database pool exhausted")
        return _plain(code_pb2.RESOURCE_EXHAUSTED, OVERLOADED)
    if is_conflict(exc):
        # the database picked this call's transaction to roll back; the same call, sent
        # again, finds the other one committed
        log.info("transaction rolled back by the database: %s", exc)
        return _plain(code_pb2.ABORTED, CONFLICT)
    if isinstance(exc, sa_exc.OperationalError) and not _statement_refused(exc):
        log.warning("database unavailable: %s", exc)
        return _plain(code_pb2.UNAVAILABLE, UNAVAILABLE)
    return None


def _statement_refused(exc: sa_exc.OperationalError) -> bool:
    """SQLite's generic SQLITE_ERROR (too many bound values, a syntax error, a missing table):
    a statement the server should not have sent, so retrying cannot help. Busy, locked, I/O
    and full-disk errors have codes of their own and stay UNAVAILABLE."""
    return getattr(exc.orig, "sqlite_errorname", None) == "SQLITE_ERROR"


def internal_status(error_id: str) -> grpc.Status:
    """INTERNAL for an unexpected exception; `error_id` finds its traceback in the log."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=DOMAIN, metadata={"error_id": error_id}
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    message = f"internal error {error_id}: the server log holds its details"
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[packed])
    )
