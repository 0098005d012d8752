"""Every call's last line of defence (composed into each method's wrapper by api/rpc_stack.py).

- A request body that does not decode as its message (not protobuf, invalid UTF-8 in a
  string, nested past the parser's limit) answers INVALID_ARGUMENT. grpc would answer
  UNKNOWN and log a traceback: here each handler's request deserializer is wrapped so that
  a failure becomes a marker value (`Undecodable`), which the wrapper turns into the status.
- An exception raised by a servicer maps through `errors.expected_status` (the one
  exception -> status table, `fail`); any other exception is a bug: INTERNAL, with an error id
  that names the single log record holding its traceback.

Handlers with a request stream (server reflection) and plain (non-async) behaviours are left
as they are.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import Message
from jobwheel.server.api import errors

log = logging.getLogger("jobwheel.server.api")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


@dataclass(frozen=True, slots=True)
class Undecodable:
    status: grpc.Status


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, Message):
        return str(owner.DESCRIPTOR.full_name)
    return "request"


def _guard_deserializer(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    name = _message_name(deserializer)
    status = errors.to_grpc_status(
        errors.InvalidArgument(
            [errors.FieldViolation("request", f"the body is not a valid {name} message")]
        )
    )

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, or whatever a malformed body makes the parser raise
            return Undecodable(status)

    return decode


async def fail(exc: Exception, context: Context, method: str) -> None:
    """Ends the call with the status `exc` maps to (INTERNAL with a logged error id for an
    unexpected one); an abort the call made itself passes through."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the servicer set the status itself
    status = errors.expected_status(exc)
    if status is None:
        error_id = uuid.uuid4().hex[:16]
        log.error("internal error %s in %s", error_id, method, exc_info=exc)
        status = errors.internal_status(error_id)
    await context.abort_with_status(status)


def applies(handler: grpc.RpcMethodHandler) -> bool:
    """Whether the guard wraps `handler`: a unary request and an async behaviour (a coroutine,
    an async generator, or a coroutine writing its stream with context.write)."""
    if handler.request_streaming:
        return False
    if not handler.response_streaming:
        return inspect.iscoroutinefunction(handler.unary_unary)
    behavior = handler.unary_stream
    return inspect.isasyncgenfunction(behavior) or inspect.iscoroutinefunction(behavior)


def guard_deserializer(handler: grpc.RpcMethodHandler) -> Callable[[bytes], Any] | None:
    """The handler's request deserializer, answering `Undecodable` instead of raising."""
    deserializer = handler.request_deserializer
    return None if deserializer is None else _guard_deserializer(deserializer)
