"""grpc_testing plays the server for the sync client: each test answers the calls itself."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import grpc_testing  # type: ignore[import-untyped]
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2
from jobwheel.client import Client, Retry
from jobwheel.v1 import job_service_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["JobService"]


class _Recording:
    """Wraps a multi-callable to record the per-call options (grpc_testing drops timeouts)."""

    def __init__(self, inner: Any, seen: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.seen = seen

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        self.seen.append(kwargs)
        return self.inner(request, **kwargs)


class _RecordingChannel:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Recording(self.inner.unary_unary(method, *args, **kwargs), self.calls)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Recording(self.inner.unary_stream(method, *args, **kwargs), self.calls)

    def close(self) -> None:
        pass


def rich_trailer(code: grpc.StatusCode, message: str, *details: Message) -> tuple[Any, ...]:
    """The trailing metadata a server sends with a google.rpc.Status."""
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class Fake:
    def __init__(self, **client_options: Any) -> None:
        self.channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
        self.recording = _RecordingChannel(self.channel)
        self.sleeps: list[float] = []
        options: dict[str, Any] = {"retry": Retry(jitter=0), "sleep": self.sleeps.append}
        options.update(client_options)
        self.client = Client(channel=self.recording, **options)
        self.pool = ThreadPoolExecutor(1)

    @property
    def timeouts(self) -> list[Any]:
        return [c.get("timeout") for c in self.recording.calls]

    def start(self, fn: Callable[[Client], Any]) -> Future[Any]:
        """Runs a client call in a thread while the test plays the server."""
        return self.pool.submit(fn, self.client)

    def take(self, name: str) -> tuple[Any, Any]:
        """The next call of RPC `name`: (request, rpc to terminate)."""
        _, request, rpc = self.channel.take_unary_unary(SERVICE.methods_by_name[name])
        return request, rpc

    def reply(self, name: str, response: Message) -> Any:
        request, rpc = self.take(name)
        rpc.terminate(response, (), grpc.StatusCode.OK, "")
        return request

    def fail(self, name: str, code: grpc.StatusCode, message: str = "", *details: Message) -> Any:
        request, rpc = self.take(name)
        trailer = rich_trailer(code, message, *details) if details else ()
        rpc.terminate(None, trailer, code, message)
        return request

    def take_stream(self, name: str = "WatchJobs") -> tuple[Any, Any]:
        _, request, rpc = self.channel.take_unary_stream(SERVICE.methods_by_name[name])
        return request, rpc

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
