"""A grpc.aio server interceptor: per-RPC Prometheus metrics and, at debug level, one log line
per RPC with its method, status code and duration."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from jobwheel.server.observability.metrics import Metrics

RPC_LOGGER = "jobwheel.server.rpc"
log = logging.getLogger(RPC_LOGGER)
Behavior = Callable[..., Any]


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


_CODE_NAMES: dict[int, str] = {s.value[0]: s.name for s in grpc.StatusCode}


def _code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The status the call ended with: what the handler set or aborted with, else OK, or
    UNKNOWN for an exception (CANCELLED when the call itself was cancelled)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # abort() may leave the raw number
        return _CODE_NAMES.get(code, "UNKNOWN")
    if error is None:
        return "OK"
    return "UNKNOWN" if isinstance(error, Exception) else "CANCELLED"


class RpcObserver(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        # method -> (the handler, its wrapping, its started counter): built once per method
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            started = None
            if self.metrics is not None:
                started = self.metrics.rpc_started.labels(*self._labels(method, handler))
            cached = self._wrapped[method] = (handler, self._wrap(method, handler), started)
        if cached[2] is not None:
            cached[2].inc()
        return cached[1]

    @staticmethod
    def _labels(method: str, handler: grpc.RpcMethodHandler) -> tuple[str, str, str]:
        service, _, name = method.lstrip("/").rpartition("/")
        return _kind(handler), service, name

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        observe = self._observer(method, self._labels(method, handler))
        if handler.response_streaming:
            inner = handler.unary_stream or handler.stream_stream

            async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
                with _observed(observe, context):
                    async for response in inner(request, context):
                        yield response

            factory = (
                grpc.unary_stream_rpc_method_handler
                if not handler.request_streaming
                else grpc.stream_stream_rpc_method_handler
            )
            return factory(
                streaming,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        inner_unary = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: Any) -> Any:
            with _observed(observe, context):
                return await inner_unary(request, context)

        factory = (
            grpc.unary_unary_rpc_method_handler
            if not handler.request_streaming
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observer(
        self, method: str, labels: tuple[str, str, str]
    ) -> Callable[[Any, BaseException | None, float], None]:
        m = self.metrics
        seconds = m.rpc_seconds.labels(*labels) if m is not None else None
        handled: dict[str, Any] = {}  # code -> its counter

        def observe(context: Any, error: BaseException | None, took: float) -> None:
            code = _code(context, error)
            if m is not None and seconds is not None:
                counter = handled.get(code)
                if counter is None:
                    counter = handled[code] = m.rpc_handled.labels(*labels, code)
                counter.inc()
                seconds.observe(took)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "rpc %s %s %.1fms",
                    method,
                    code,
                    took * 1000,
                    extra={"rpc_method": method, "grpc_code": code, "duration_ms": took * 1000},
                )

        return observe


@contextlib.contextmanager
def _observed(
    observe: Callable[[Any, BaseException | None, float], None], context: Any
) -> Iterator[None]:
    """Times the block and hands its outcome (the exception that ended it, if any) to `observe`."""
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        observe(context, error, time.perf_counter() - start)
