"""Every call's last line of defence: one interceptor for all services.

- A request body that does not decode as its message (not protobuf, invalid UTF-8 in a
  string, nested past the parser's limit) answers INVALID_ARGUMENT. grpc would answer
  UNKNOWN and log a traceback: here each handler's request deserializer is wrapped so that
  a failure becomes a marker value, which the wrapped behaviour turns into the status.
- An exception raised by a servicer maps through `errors.expected_status` (the one
  exception -> status table); any other exception is a bug: INTERNAL, with an error id that
  names the single log record holding its traceback.

Handlers with a request stream (server reflection) are left as they are.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import Message
from jobwheel.server.api import errors

log = logging.getLogger("jobwheel.server.api")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


@dataclass(frozen=True, slots=True)
class _Undecodable:
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
            return _Undecodable(status)

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


def _guard_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: Context) -> Any:
        if isinstance(request, _Undecodable):
            await context.abort_with_status(request.status)
        try:
            return await behavior(request, context)
        except Exception as exc:
            await fail(exc, context, method)

    return call


def _guard_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await context.abort_with_status(request.status)
        try:
            async for response in behavior(request, context):
                yield response
        except Exception as exc:
            await fail(exc, context, method)

    return call


def _guard(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    deserializer = handler.request_deserializer
    if deserializer is not None:
        deserializer = _guard_deserializer(deserializer)
    if not handler.response_streaming:
        behavior = handler.unary_unary
        if not inspect.iscoroutinefunction(behavior):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _guard_unary(behavior, method), deserializer, handler.response_serializer
        )
    behavior = handler.unary_stream
    if inspect.isasyncgenfunction(behavior):
        wrapped = _guard_stream(behavior, method)
    elif inspect.iscoroutinefunction(behavior):  # a writer-style stream (context.write)
        wrapped = _guard_unary(behavior, method)
    else:
        return handler
    return grpc.unary_stream_rpc_method_handler(wrapped, deserializer, handler.response_serializer)


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each unary-request handler once; later calls reuse the wrapped handler."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _guard(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
