"""Every RPC of both services, called under every role, against the README's role table.

The RPC list comes from the service descriptors, the expectations from the README: an RPC
added to the contract without a row (in the README or in the code's table) fails here.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from jobwheel.server.security import roles
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.v1 import job_service_pb2, worker_service_pb2

from tests.acceptance.process import ROOT
from tests.conftest import Running, running_server
from tests.security.conftest import Tokens, error_info

SERVICES = (
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"],
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"],
)
METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{m.name}": m for service in SERVICES for m in service.methods
}
ROW = re.compile(r"^\| `(\w+)` \|\s*([\w, ]*?)\s*\| (.*) \|$", re.M)
# Requests that answer at once when admitted (an empty WatchJobs would wait for a heartbeat).
REQUESTS: dict[str, dict[str, Any]] = {"WatchJobs": {"include_snapshot": True}}


def readme_table() -> dict[str, tuple[set[str], list[str]]]:
    """role -> (the roles whose rows it also has, the RPC names of its own row)."""
    text = (ROOT / "README.md").read_text()
    security = text[text.index("\n## Security\n") : text.index("\n## States\n")]
    table = {}
    for role, includes, rpcs in ROW.findall(security):
        table[role] = (
            {r.strip() for r in includes.split(",") if r.strip()},
            re.findall(r"`(\w+)`", rpcs),
        )
    return table


def documented_rows() -> dict[str, str]:
    """Full method path -> the role of its README row; each RPC in exactly one row."""
    by_name = {m.name: path for path, m in METHODS.items()}
    rows: dict[str, str] = {}
    for role, (_, names) in readme_table().items():
        for name in names:
            path = by_name[name]  # KeyError: the README names an RPC the contract lacks
            assert path not in rows, f"{name} is in two rows"
            rows[path] = role
    return rows


def test_every_rpc_has_exactly_one_row_in_readme_code_and_proto() -> None:
    rows = documented_rows()
    assert set(rows) == set(METHODS), f"RPCs without a README row: {set(METHODS) - set(rows)}"
    assert {path: role.value for path, role in roles.ROW_OF.items()} == rows
    assert set(readme_table()) == {r.value for r in roles.Role}
    for role, (includes, _) in readme_table().items():
        assert roles.GRANTS[roles.Role(role)] == {roles.Role(role)} | {
            roles.Role(r) for r in includes
        }
    for name in ("job_service", "worker_service"):
        proto = (ROOT / "proto" / "jobwheel" / "v1" / f"{name}.proto").read_text()
        for role, rpc in re.findall(r"// Role: (\w+)\.\n\s+rpc (\w+)\(", proto):
            assert rows[next(p for p in METHODS if p.endswith("/" + rpc))] == role, rpc


def allowed(role: str, method: str, rows: dict[str, str]) -> bool:
    includes, _ = readme_table()[role]
    return rows[method] in {role} | includes


async def call(channel: grpc.aio.Channel, path: str, metadata: Any) -> grpc.StatusCode:
    """Calls `path` with a minimal request; the status it ends with (OK when it answered)."""
    method = METHODS[path]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = request_class(**REQUESTS.get(method.name, {}))
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request, metadata=metadata, timeout=10)
            await stream.read()
            stream.cancel()
        else:
            await channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as err:
        if err.code() is grpc.StatusCode.PERMISSION_DENIED:
            info = error_info(err)
            assert info is not None and info.reason == "ROLE_REQUIRED", err
            assert info.metadata["required_role"] == roles.ROW_OF[path].value
        return err.code()
    return grpc.StatusCode.OK


async def test_each_role_may_call_exactly_its_rows(secured: Running, tokens: Tokens) -> None:
    rows = documented_rows()
    for role in roles.Role:
        for path in METHODS:
            code = await call(secured.channel, path, tokens.bearer(role.value))
            denied = code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
            assert denied != allowed(role.value, path, rows), (role, path, code)
            if denied:
                assert code is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer jw_not-a-token"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer a.b.c"),),
    ],
    ids=["missing", "unknown", "not-bearer", "jwt-without-jwks"],
)
async def test_without_a_valid_token_every_rpc_is_unauthenticated(
    secured: Running, metadata: Any
) -> None:
    for path in METHODS:
        assert await call(secured.channel, path, metadata) is grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_are_open(secured: Running) -> None:
    health = health_pb2_grpc.HealthStub(secured.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(secured.channel)
    stream = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    async for answer in stream:
        names = {s.name for s in answer.list_services_response.service}
        assert "jobwheel.v1.JobService" in names
        break


async def test_auth_reflection_asks_for_a_token(tmp_path: Any, tokens: Tokens) -> None:
    settings = SecuritySettings(auth_tokens=str(tokens.path), auth_reflection=True)
    async with running_server(f"sqlite:///{tmp_path / 'r.db'}", security=settings) as server:
        stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.ServerReflectionInfo(iter([request])):
                pass
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # any valid token will do: reflection describes the contract, not jobs
        async for answer in stub.ServerReflectionInfo(
            iter([request]), metadata=tokens.bearer("reader")
        ):
            assert answer.list_services_response.service
            break
        health = health_pb2_grpc.HealthStub(server.channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1
