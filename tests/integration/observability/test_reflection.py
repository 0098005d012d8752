"""Reflection v1 and v1alpha, with the proto comments in the served descriptors."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from tests.conftest import Running

BIN = Path(sys.executable).parent
V1 = "grpc.reflection.v1.ServerReflection"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Reflection does not touch the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'jobwheel.db'}"


async def run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def reflect(server: Running, service: str, request: rpb.ServerReflectionRequest) -> list[
    rpb.ServerReflectionResponse
]:  # fmt: skip
    call = server.channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=rpb.ServerReflectionRequest.SerializeToString,
        response_deserializer=rpb.ServerReflectionResponse.FromString,
    )

    async def requests() -> object:
        yield request

    return [r async for r in call(requests())]


async def test_both_versions_list_services_and_serve_comments(server: Running) -> None:
    for service in (V1, "grpc.reflection.v1alpha.ServerReflection"):
        [listed] = await reflect(server, service, rpb.ServerReflectionRequest(list_services=""))
        names = {s.name for s in listed.list_services_response.service}
        assert {"jobwheel.v1.JobService", "jobwheel.v1.WorkerService", V1} <= names
        assert "grpc.health.v1.Health" in names
        [found] = await reflect(
            server,
            service,
            rpb.ServerReflectionRequest(file_containing_symbol="jobwheel.v1.JobService"),
        )
        files = {
            f.name: f
            for f in map(
                descriptor_pb2.FileDescriptorProto.FromString,
                found.file_descriptor_response.file_descriptor_proto,
            )
        }
        comments = [
            loc.leading_comments
            for loc in files["jobwheel/v1/job_service.proto"].source_code_info.location
        ]
        assert any("Who runs jobs" in c for c in comments)
        assert files["jobwheel/v1/job.proto"].source_code_info.location  # dependencies too


async def test_unknown_symbol_is_not_found(server: Running) -> None:
    [reply] = await reflect(
        server,
        "grpc.reflection.v1.ServerReflection",
        rpb.ServerReflectionRequest(file_containing_symbol="no.such.Thing"),
    )
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_grpcurl_describe_shows_the_comments(server: Running) -> None:
    code, out, err = await run(
        str(BIN / "grpcurl"), "-plaintext", server.address, "describe", "jobwheel.v1.Worker"
    )
    assert code == 0, err
    assert "One executor of jobs." in out and "jobs_held" in out


async def test_buf_curl_with_reflection_v1(server: Running) -> None:
    code, out, err = await run(
        str(BIN / "buf"), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
        "--reflect-protocol", "grpc-v1", "--data", "{}",
        f"http://{server.address}/jobwheel.v1.JobService/ListWorkers",
    )  # fmt: skip
    assert code == 0, err
    assert '"kind": "WORKER_KIND_SERVER"' in out


@pytest.mark.parametrize(
    "symbol", ["jobwheel.v1.JobService.CancelJobs", "jobwheel.v1.WorkerService.LeaseJobs"]
)
async def test_grpcurl_describe_a_method(server: Running, symbol: str) -> None:
    # the runtime pool finds no method by its name: this said "Symbol not found"
    code, out, err = await run(
        str(BIN / "grpcurl"), "-plaintext", server.address, "describe", symbol
    )
    assert code == 0, err
    assert f"{symbol} is a method" in out and "rpc " in out


async def test_a_method_of_an_unknown_service_is_not_found(server: Running) -> None:
    [reply] = await reflect(
        server,
        V1,
        rpb.ServerReflectionRequest(file_containing_symbol="jobwheel.v1.NoService.CancelJobs"),
    )
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    [reply] = await reflect(
        server,
        V1,
        rpb.ServerReflectionRequest(file_containing_symbol="jobwheel.v1.JobService.NoMethod"),
    )
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
