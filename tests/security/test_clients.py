"""The Python client, worker SDK and CLI against a server with TLS and tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from jobwheel.client import (
    AsyncClient,
    Client,
    Connection,
    PermissionDenied,
    Unauthenticated,
)
from jobwheel.client.cli import run as cli
from jobwheel.client.worker import Worker
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.v1 import job_pb2

from tests.conftest import Running, running_server
from tests.security.conftest import Pems, Tokens


@pytest.fixture
async def tls_server(
    tmp_path: Path, pems: Pems, tokens: Tokens
) -> AsyncIterator[tuple[Running, str]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    settings = SecuritySettings(
        tls_cert=pems.write("server.pem", b"".join(b.bytes() for b in cert.cert_chain_pems)),
        tls_key=pems.write("server.key", cert.private_key_pem.bytes()),
        auth_tokens=str(tokens.path),
    )
    ca_file = pems.write("ca.pem", ca.cert_pem.bytes())
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        yield server, ca_file


def blocking_session(address: str, ca: str, tokens: Tokens) -> None:
    creds = Connection.of(address, token=tokens.plain["producer"], tls_ca=ca)
    with Client(creds) as jw:
        job = jw.enqueue_job("remote.work", queue="q").job
        assert jw.get_job(job.id).id == job.id
        with pytest.raises(PermissionDenied):
            jw.cancel_job(job.id)
    with (
        Client(Connection.of(address, token="jw_nope", tls_ca=ca)) as jw,
        pytest.raises(Unauthenticated),
    ):
        jw.list_jobs()


async def test_the_blocking_client(tls_server: tuple[Running, str], tokens: Tokens) -> None:
    server, ca = tls_server
    # in a thread, beside the server's event loop
    await asyncio.to_thread(blocking_session, server.address, ca, tokens)


async def test_async_client_takes_the_token_from_the_environment(
    tls_server: tuple[Running, str], tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = tls_server
    monkeypatch.setenv("JOBWHEEL_TOKEN", tokens.plain["reader"])
    monkeypatch.setenv("JOBWHEEL_TLS_CA", ca)
    async with AsyncClient(server.address) as jw:
        assert (await jw.list_jobs()).jobs is not None


async def test_the_worker_sdk(tls_server: tuple[Running, str], tokens: Tokens) -> None:
    server, ca = tls_server
    creds = Connection.of(server.address, token=tokens.plain["worker"], tls_ca=ca)
    worker = Worker(creds, worker_id="sdk", poll_wait=5.0)

    @worker.task("secure.echo")
    def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    runner = asyncio.create_task(worker.run())
    try:
        producer = Connection.of(server.address, token=tokens.plain["producer"], tls_ca=ca)
        async with AsyncClient(producer) as jw:
            job = (await jw.enqueue_job("secure.echo", payload={"n": 1})).job
            for _ in range(200):
                got = await jw.get_job(job.id)
                if got.state == job_pb2.JOB_STATE_COMPLETED:
                    break
                await asyncio.sleep(0.05)
            assert got.state == job_pb2.JOB_STATE_COMPLETED
            [attempt] = (await jw.list_job_attempts(job.id)).attempts
            assert attempt.worker_id == "worker/sdk"  # the lease named the principal
    finally:
        await worker.stop(1.0)
        await runner


async def test_the_cli(
    tls_server: tuple[Running, str], tokens: Tokens, capsys: pytest.CaptureFixture[str]
) -> None:
    server, ca = tls_server
    base = ["--server", server.address, "--tls-ca", ca]
    code = await asyncio.to_thread(cli, [*base, "--token", tokens.plain["reader"], "list"])
    assert code == 0, capsys.readouterr().err
    code = await asyncio.to_thread(cli, ["list", *base, "--token", "jw_wrong"])
    assert code != 0
    assert "invalid token" in capsys.readouterr().err


def test_connection_options_fall_back_to_the_environment() -> None:
    env = {
        "JOBWHEEL_SERVER": "jobs.internal",
        "JOBWHEEL_TOKEN": "jw_from_env",
        "JOBWHEEL_TLS_CA": "ca.pem",
    }
    c = Connection.of(env=env)
    assert (c.address, c.token, c.tls_ca, c.tls_cert) == (
        "jobs.internal:50051",
        "jw_from_env",
        "ca.pem",
        None,
    )
    assert c.uses_tls and c.metadata() == (("authorization", "Bearer jw_from_env"),)
    given = Connection.of("127.0.0.1:7000", token="jw_given", env=env)
    assert (given.address, given.token, given.tls_ca) == ("127.0.0.1:7000", "jw_given", "ca.pem")
    assert Connection.of(given) is given
    plain = Connection.of("127.0.0.1:7000", env={})
    assert not plain.uses_tls and plain.metadata() == ()
    assert "jw_given" not in repr(given)  # reprs reach logs
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        Connection.of("127.0.0.1:7000", tls_cert="client.pem", env={})


def test_the_cli_refuses_half_or_unreadable_tls_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--server", "127.0.0.1:1", "list"]
    assert cli([*base, "--tls-cert", "client.pem"]) == 2
    assert "tls_key" in capsys.readouterr().err
    assert cli([*base, "--tls-ca", str(tmp_path / "missing.pem")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "missing.pem" in line
