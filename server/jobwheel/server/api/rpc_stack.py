"""Every RPC's one wrapper, built per method at start-up from the concerns' stages.

Outermost first, each stage seeing what the next one answers: the metrics and the debug RPC
line (observability/rpc.py: every status counted); authentication, roles and the principal
(security/interceptor.py: a caller who may not call learns nothing of its request); the
guard (api/guard.py: an undecodable body is INVALID_ARGUMENT, a servicer's exception its
status or INTERNAL); the audit line of a changing call that succeeded (security/audit.py).
A method that returns replies already encoded (api/encoded_reply.py) gets a response
serializer that passes them through.
Traces, when on, come from OpenTelemetry's interceptor around all of it.

One coroutine per call instead of one per interceptor, and no interceptor chain to find the
handler: the methods are served through one generic handler (a dict lookup). They are not
registered with grpc one by one because grpc.aio's serving loop keeps one pending call per
registered method and waits on all of them again after every call it takes, a cost that
grows with the number of methods (about 45 here) and is paid on every call.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from jobwheel.server.api import encoded_reply, guard
from jobwheel.server.observability.rpc import Observed, RpcObserver
from jobwheel.server.security.interceptor import Admission, Gate
from jobwheel.server.security.principal import reset_current, set_current

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handlers: TypeAlias = dict[str, grpc.RpcMethodHandler]


class MethodCollector:
    """Stands in for the server in the generated `add_*Servicer_to_server` functions, which
    hand over each service's methods twice: as a generic handler (dropped here) and by name."""

    def __init__(self) -> None:
        self.handlers: Handlers = {}

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        pass  # the same methods come through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: Handlers) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class _ByMethod(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._handlers.get(handler_call_details.method)


def serve_by_method(server: grpc.aio.Server, handlers: Handlers) -> None:
    """Serves `handlers` (by full method name) through one generic handler."""
    server.add_generic_rpc_handlers((_ByMethod(handlers),))


class RpcStack:
    """Collects the services' methods, then serves each through its wrapper."""

    def __init__(self, observer: RpcObserver | None, gate: Gate) -> None:
        self.observer = observer
        self.gate = gate
        self.collector = MethodCollector()

    @property
    def target(self) -> MethodCollector:
        """What to pass as `server` to the generated add_*Servicer_to_server functions."""
        return self.collector

    def wrapped(self) -> Handlers:
        """Every collected method's wrapped handler, by full method name."""
        return {
            method: self._wrap(method, handler)
            for method, handler in self.collector.handlers.items()
        }

    def serve(self, server: grpc.aio.Server) -> None:
        """Adds every collected method to `server`, wrapped, as one generic handler."""
        serve_by_method(server, self.wrapped())

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        observed = self.observer.stage(method, handler) if self.observer is not None else None
        admission = self.gate.admission(method)
        guarded = guard.applies(handler)
        deserializer = guard.guard_deserializer(handler) if guarded else None
        deserializer = deserializer or handler.request_deserializer
        serializer = handler.response_serializer
        encoded = serializer is not None and encoded_reply.returns_encoded(handler)
        if encoded:
            serializer = encoded_reply.passing_serializer(serializer)
        if observed is None and admission is None and not guarded and not encoded:
            return handler
        if not handler.response_streaming:
            if handler.request_streaming:
                return grpc.stream_unary_rpc_method_handler(
                    _unary(method, handler.stream_unary, observed, admission, False),
                    deserializer,
                    serializer,
                )
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary, observed, admission, guarded),
                deserializer,
                serializer,
            )
        behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
        if guarded and not inspect.isasyncgenfunction(behavior):
            # a writer-style stream (a coroutine calling context.write): a coroutine too
            wrapper: Callable[..., Any] = _unary(method, behavior, observed, admission, True)
        else:
            wrapper = _streaming(method, behavior, observed, admission, guarded)
        factory = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return factory(wrapper, deserializer, serializer)


def _unary(
    method: str,
    behavior: Callable[..., Any],
    observed: Observed | None,
    admission: Admission | None,
    guarded: bool,
) -> Callable[..., Any]:
    started = observed.started if observed is not None else None
    done = observed.done if observed is not None else None
    admit = admission.admit if admission is not None else None
    fixed = admission.principal if admission is not None else None
    audit = admission.audit if admission is not None else None

    async def call(request: Any, context: Context) -> Any:
        if started is not None:
            started()
        start = time.perf_counter() if done is not None else 0.0
        error: BaseException | None = None
        try:
            principal = fixed
            if principal is None and admit is not None:
                principal = await admit(context)
            token = set_current(principal) if principal is not None else None
            try:
                if guarded:
                    if type(request) is guard.Undecodable:
                        await context.abort_with_status(request.status)
                    try:
                        response = await behavior(request, context)
                    except Exception as exc:
                        await guard.fail(exc, context, method)
                        raise  # fail raises; this keeps the type checker informed
                else:
                    response = await behavior(request, context)
            finally:
                if token is not None:
                    reset_current(token)
            if audit is not None and response is not None and principal is not None:
                try:
                    audit(principal, request, response)
                except Exception as exc:
                    await guard.fail(exc, context, method)
            return response
        except BaseException as exc:
            error = exc
            raise
        finally:
            if done is not None:
                done(context, error, time.perf_counter() - start)

    return call


def _streaming(
    method: str,
    behavior: Callable[..., AsyncIterator[Any]],
    observed: Observed | None,
    admission: Admission | None,
    guarded: bool,
) -> Callable[..., AsyncIterator[Any]]:
    started = observed.started if observed is not None else None
    done = observed.done if observed is not None else None
    admit = admission.admit if admission is not None else None
    fixed = admission.principal if admission is not None else None

    async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
        if started is not None:
            started()
        start = time.perf_counter() if done is not None else 0.0
        error: BaseException | None = None
        try:
            principal = fixed
            if principal is None and admit is not None:
                principal = await admit(context)
            if principal is not None:
                # each call runs in its own task: the principal needs no reset
                set_current(principal)
            if guarded:
                if type(request) is guard.Undecodable:
                    await context.abort_with_status(request.status)
                try:
                    async for response in behavior(request, context):
                        yield response
                except Exception as exc:
                    await guard.fail(exc, context, method)
            else:
                async for response in behavior(request, context):
                    yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            if done is not None:
                done(context, error, time.perf_counter() - start)

    return stream
