"""Per-RPC Prometheus metrics and, at debug level, one log line per RPC with its method, status
code and duration."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Observed:
    """One method's observation: `started()` as a call begins, `done(context, error, took)`
    as it ends (the exception that ended it, if any; seconds)."""

    started: Callable[[], None] | None
    done: Callable[[Any, BaseException | None, float], None]


class RpcObserver:
    """Per-RPC Prometheus metrics and the debug RPC line, per method: api/rpc_stack.py puts
    each method's `Observed` outermost in its wrapper, so that it sees every status."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics

    @property
    def active(self) -> bool:
        """Whether calls are observed at all (metrics on, or the RPC line at debug level)."""
        return self.metrics is not None or log.isEnabledFor(logging.DEBUG)

    def stage(self, method: str, handler: grpc.RpcMethodHandler) -> Observed | None:
        """What `method`'s calls tell (None: nothing is observed)."""
        if not self.active:
            return None
        labels = self._labels(method, handler)
        started = None
        if self.metrics is not None:
            started = self.metrics.rpc_started.labels(*labels).inc
        return Observed(started, self._observer(method, labels))

    @staticmethod
    def _labels(method: str, handler: grpc.RpcMethodHandler) -> tuple[str, str, str]:
        service, _, name = method.lstrip("/").rpartition("/")
        return _kind(handler), service, name

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
