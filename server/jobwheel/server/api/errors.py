"""Domain errors and their gRPC form: a status code plus google.rpc details.

Servicers raise these; `rpc_errors` turns them into rich statuses (BadRequest with one
field violation per offending field, ErrorInfo with the job's current state), which
grpcurl, buf curl and the generated clients of every language can decode.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from jobwheel.server.storage.outage import DatabaseUnavailable
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)
DOMAIN = "jobwheel.dev"
OVERLOADED = "the server is overloaded (all database connections busy); retry with backoff"
UNAVAILABLE = "the database is unavailable; retry with backoff"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    code: int = code_pb2.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[Any]:
        return []


class InvalidArgument(DomainError):
    code = code_pb2.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation]) -> None:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid argument: {summary}")
        self.violations = violations

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


class NotFound(DomainError):
    code = code_pb2.NOT_FOUND

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name

    def details(self) -> list[Any]:
        return [error_details_pb2.ResourceInfo(resource_type=self.kind, resource_name=self.name)]


class FailedPrecondition(DomainError):
    code = code_pb2.FAILED_PRECONDITION

    def __init__(self, message: str, reason: str, **metadata: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata

    def details(self) -> list[Any]:
        return [
            error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        ]


class Unavailable(DomainError):
    """The server cannot serve the call now (e.g. it is stopping); another try may work."""

    code = code_pb2.UNAVAILABLE


class OutOfRange(FailedPrecondition):
    code = code_pb2.OUT_OF_RANGE


class ResourceExhausted(FailedPrecondition):
    code = code_pb2.RESOURCE_EXHAUSTED


def to_grpc_status(err: DomainError) -> grpc.Status:
    details = []
    for detail in err.details():
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    status = status_pb2.Status(code=err.code, message=err.message, details=details)
    return rpc_status.to_status(status)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def rpc_errors(method: F) -> F:
    """Wraps a unary servicer method: a DomainError aborts the call with its rich status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except DomainError as err:
            await context.abort_with_status(to_grpc_status(err))
        except DatabaseUnavailable:
            # an outage, not the caller's mistake: the same call works once the database is back
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE)
        except sa_exc.TimeoutError:
            # every database connection is busy: the server is overloaded, the call can wait
            log.warning("database pool exhausted in %s", method.__name__)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVERLOADED)
        except sa_exc.OperationalError as exc:
            log.warning("database unavailable in %s: %s", method.__name__, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE)

    return wrapper  # type: ignore[return-value]
