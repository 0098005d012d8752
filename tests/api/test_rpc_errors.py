"""Statuses no validation decides: bodies that are not protobuf, and the server's own bugs."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.v1 import job_service_pb2 as pb

from tests.api.helpers import field_violations
from tests.conftest import Running
from tests.fuzz.harness import methods, path

# Not a message of any type: a wire type that does not exist, an endless varint, a length
# past the end.
BODIES = [b"not protobuf at all", b"\xff" * 16, b"\x0a\xff\xff\xff\xff\x0f"]


async def test_bodies_that_are_not_protobuf(server: Running) -> None:
    for method in methods():
        out = message_factory.GetMessageClass(method.output_type).FromString
        for body in BODIES:
            if method.server_streaming:
                call: Any = server.channel.unary_stream(path(method), lambda b: b, out)(body)
                stream = call.read()
            else:
                stream = server.channel.unary_unary(path(method), lambda b: b, out)(body)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stream
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, body)
            assert "request" in field_violations(info.value)
    # a well-formed body whose string field is not UTF-8
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.channel.unary_unary("/jobwheel.v1.JobService/GetJob", lambda b: b)(
            b"\x0a\x02\xc3\x28"
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _error_id(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.reason == "INTERNAL"
            return str(info.metadata["error_id"])
    raise AssertionError("no ErrorInfo in an INTERNAL status")


async def test_a_bug_answers_internal_with_the_id_of_its_log_line(
    server: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the store")

    async def broken_read(*args: object, **kwargs: object) -> None:
        broken()

    # the fault is injected at the storage boundary, under a unary and a streaming RPC
    monkeypatch.setattr(server.app.store, "get_job", broken_read)
    monkeypatch.setattr(server.app.store, "snapshot", broken)
    caplog.set_level(logging.ERROR)
    errors = []
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await server.jobs.GetJob(pb.GetJobRequest(id="01234567-89ab-7def-8123-456789abcdef"))
    errors.append(unary.value)
    stream = server.jobs.WatchJobs(pb.WatchJobsRequest(include_snapshot=True))
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        await stream.read()
    errors.append(streamed.value)
    for err in errors:
        assert err.code() == grpc.StatusCode.INTERNAL
        error_id = _error_id(err)
        assert error_id in (err.details() or "")
        # exactly one log record names it, and that record holds the traceback
        records = [r for r in caplog.records if error_id in r.getMessage()]
        assert len(records) == 1, [r.getMessage() for r in caplog.records]
        assert records[0].exc_info is not None
        assert "a bug in the store" in caplog.text
    # the service goes on answering
    monkeypatch.undo()
    listed = await server.jobs.ListJobs(pb.ListJobsRequest())
    assert listed.jobs == []
