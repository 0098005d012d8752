"""Admission (security) and the guard together: authentication and roles come first,
then the guard's statuses; an unexpected failure in either is INTERNAL with an error id."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.api.helpers import field_violations
from tests.integration.security.conftest import Tokens, error_info, md

GARBAGE = b"not protobuf at all"
JOB_ID = "01234567-89ab-7def-8123-456789abcdef"


def raw(server: Running, method: str) -> Any:
    return server.channel.unary_unary(f"/jobwheel.v1.JobService/{method}", lambda b: b)


async def test_a_body_that_is_not_protobuf_is_judged_after_the_caller(
    secured: Running, tokens: Tokens
) -> None:
    calls: list[tuple[str, dict[str, Any], grpc.StatusCode]] = [
        ("GetJob", {}, grpc.StatusCode.UNAUTHENTICATED),
        (
            "GetJob",
            {"metadata": (("authorization", "Bearer jw_nope"),)},
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        ("CancelJobs", md(tokens, "reader"), grpc.StatusCode.PERMISSION_DENIED),
        ("GetJob", md(tokens, "reader"), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for method, kwargs, code in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(secured, method)(GARBAGE, **kwargs)
        assert info.value.code() == code, (method, kwargs)
    # the statuses keep their details: the role needed, the field at fault
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(secured, "CancelJobs")(GARBAGE, **md(tokens, "reader"))
    found = error_info(info.value)
    assert found is not None and found.reason == "ROLE_REQUIRED"
    assert found.metadata["required_role"] == "operator"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(secured, "GetJob")(GARBAGE, **md(tokens, "reader"))
    assert "request" in field_violations(info.value)


def internal_error_id(err: grpc.aio.AioRpcError) -> str:
    assert err.code() == grpc.StatusCode.INTERNAL, err
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            assert info.reason == "INTERNAL"
            return str(info.metadata["error_id"])
    raise AssertionError("no ErrorInfo in an INTERNAL status")


async def test_unexpected_failures_answer_internal_with_an_error_id(
    secured: Running,
    tokens: Tokens,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_lookup(token: str) -> None:
        raise RuntimeError("a bug in the token lookup")

    async def broken_read(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the store")

    caplog.set_level(logging.ERROR)
    reader = md(tokens, "reader")
    errors: list[grpc.aio.AioRpcError] = []
    # a servicer's failure, behind a successful authentication
    monkeypatch.setattr(secured.app.store, "get_job", broken_read)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await secured.jobs.GetJob(pb.GetJobRequest(id=JOB_ID), **reader)
    errors.append(info.value)
    # a failure while authenticating, under a unary and a streaming RPC
    authenticator = secured.app.security.authenticator
    assert authenticator.tokens is not None
    monkeypatch.setattr(authenticator.tokens, "lookup", broken_lookup)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await secured.jobs.ListJobs(pb.ListJobsRequest(), **reader)
    errors.append(info.value)
    stream = secured.jobs.WatchJobs(pb.WatchJobsRequest(include_snapshot=True), **reader)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()
    errors.append(info.value)
    for err in errors:
        error_id = internal_error_id(err)
        assert error_id in (err.details() or "")
        records = [r for r in caplog.records if error_id in r.getMessage()]
        assert len(records) == 1 and records[0].exc_info is not None
    assert "a bug in the token lookup" in caplog.text and "a bug in the store" in caplog.text
    monkeypatch.undo()
    assert not (await secured.jobs.ListJobs(pb.ListJobsRequest(), **reader)).jobs
