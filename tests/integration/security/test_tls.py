"""TLS and mutual TLS with certificates made here, and certificate reload."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import grpc
import pytest
import trustme
from jobwheel.client.connection import Connection
from jobwheel.server import healthcheck
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import job_service_pb2_grpc

from tests.acceptance.process import ServerProcess
from tests.conftest import running_server
from tests.integration.security.conftest import Pems, Tokens

LIST = jpb.ListJobsRequest()


class Creds(TypedDict, total=False):
    """What a Connection carries besides its address (the address is known later)."""

    token: str
    tls_ca: str
    tls_cert: str
    tls_key: str


def server_files(pems: Pems, ca: trustme.CA, prefix: str = "server") -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    return (
        pems.write(f"{prefix}.pem", b"".join(b.bytes() for b in cert.cert_chain_pems)),
        pems.write(f"{prefix}.key", cert.private_key_pem.bytes()),
    )


def client_files(pems: Pems, ca: trustme.CA, name: str) -> tuple[str, str]:
    cert = ca.issue_cert(f"{name}.example", common_name=name)
    return (
        pems.write(f"{name}.pem", b"".join(b.bytes() for b in cert.cert_chain_pems)),
        pems.write(f"{name}.key", cert.private_key_pem.bytes()),
    )


@dataclass
class Mutual:
    """A server set-up for mutual TLS: its settings, the CA file clients trust, and the CA
    that issues client certificates."""

    settings: SecuritySettings
    ca_file: str
    client_ca: trustme.CA

    def client(self, pems: Pems, name: str) -> Creds:
        cert, key = client_files(pems, self.client_ca, name)
        return Creds(tls_ca=self.ca_file, tls_cert=cert, tls_key=key)


def mutual(pems: Pems, ca: trustme.CA, tokens: Tokens | None = None) -> Mutual:
    cert, key = server_files(pems, ca)
    client_ca = trustme.CA()
    settings = SecuritySettings(
        tls_cert=cert,
        tls_key=key,
        tls_client_ca=pems.write("clients.pem", client_ca.cert_pem.bytes()),
        auth_tokens=str(tokens.path) if tokens else None,
    )
    return Mutual(settings, pems.write("ca.pem", ca.cert_pem.bytes()), client_ca)


async def list_code(address: str, creds: Creds) -> grpc.StatusCode:
    async with Connection(address, **creds).aio_channel() as channel:
        try:
            await job_service_pb2_grpc.JobServiceStub(channel).ListJobs(LIST, timeout=5)
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def test_tls_with_tokens(tmp_path: Path, pems: Pems, ca: trustme.CA, tokens: Tokens) -> None:
    cert, key = server_files(pems, ca)
    ca_file = pems.write("ca.pem", ca.cert_pem.bytes())
    settings = SecuritySettings(tls_cert=cert, tls_key=key, auth_tokens=str(tokens.path))
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        token = tokens.plain["reader"]
        assert await list_code(server.address, Creds(token=token, tls_ca=ca_file)) is (
            grpc.StatusCode.OK
        )
        assert await list_code(server.address, Creds(tls_ca=ca_file)) is (
            grpc.StatusCode.UNAUTHENTICATED
        )
        # plaintext, or a CA that did not sign the server: no connection at all
        other = pems.write("other-ca.pem", trustme.CA().cert_pem.bytes())
        for creds in (Creds(token=token), Creds(token=token, tls_ca=other)):
            assert await list_code(server.address, creds) is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_names_the_caller_by_its_certificate(
    tmp_path: Path, pems: Pems, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    m = mutual(pems, ca)
    ca_file = m.ca_file
    stranger_cert, stranger_key = client_files(pems, trustme.CA(), "stranger")
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=m.settings) as server:
        good = m.client(pems, "billing-worker")
        caplog.set_level(logging.INFO, logger="jobwheel.audit")
        async with Connection(server.address, **good).aio_channel() as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            await stub.PauseQueue(jpb.PauseQueueRequest(name="emails"), timeout=5)
        [line] = [r for r in caplog.records if r.name == "jobwheel.audit"]
        principal: Any = line.__dict__["principal"]
        assert "CN=billing-worker" in principal, principal

        no_cert = Creds(tls_ca=ca_file)
        other_ca = Creds(tls_ca=ca_file, tls_cert=stranger_cert, tls_key=stranger_key)
        for creds in (no_cert, other_ca):
            assert await list_code(server.address, creds) is grpc.StatusCode.UNAVAILABLE


async def test_reload_serves_new_certificates_and_keeps_open_connections(
    tmp_path: Path, pems: Pems, ca: trustme.CA
) -> None:
    cert, key = server_files(pems, ca)
    old_ca = Creds(tls_ca=pems.write("ca.pem", ca.cert_pem.bytes()))
    settings = SecuritySettings(tls_cert=cert, tls_key=key)
    db = f"sqlite:///{tmp_path / 'jw.db'}"
    async with (
        running_server(db, security=settings) as server,
        Connection(server.address, **old_ca).aio_channel() as kept,
    ):
        stub = job_service_pb2_grpc.JobServiceStub(kept)
        await stub.ListJobs(LIST, timeout=5)
        rotated = trustme.CA()
        server_files(pems, rotated)  # the same paths, new contents
        new_ca = Creds(tls_ca=pems.write("new-ca.pem", rotated.cert_pem.bytes()))
        assert await list_code(server.address, new_ca) is grpc.StatusCode.UNAVAILABLE
        server.app.security.reload()
        assert await list_code(server.address, new_ca) is grpc.StatusCode.OK
        assert await list_code(server.address, old_ca) is grpc.StatusCode.UNAVAILABLE
        await stub.ListJobs(LIST, timeout=5)  # the open connection was not dropped


def test_sighup_reloads_certificates(tmp_path: Path, pems: Pems, ca: trustme.CA) -> None:
    cert, key = server_files(pems, ca)
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'jw.db'}",
        tmp_path / "server.log",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    )
    proc.start()
    try:
        rotated = trustme.CA()
        server_files(pems, rotated)
        new_ca = Creds(tls_ca=pems.write("new-ca.pem", rotated.cert_pem.bytes()))
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        with Connection(proc.address, **new_ca).channel() as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            # the signal is handled asynchronously: wait for the server to be ready with it
            reply = stub.ListJobs(LIST, timeout=10, wait_for_ready=True)
            assert not reply.jobs
    finally:
        proc.stop()


async def test_mutual_tls_with_tokens_lets_the_token_decide(
    tmp_path: Path, pems: Pems, ca: trustme.CA, tokens: Tokens
) -> None:
    m = mutual(pems, ca, tokens)
    ca_file = m.ca_file
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=m.settings) as server:
        with_cert = m.client(pems, "ci")
        assert await list_code(server.address, with_cert) is grpc.StatusCode.UNAUTHENTICATED
        both = Creds(**with_cert, token=tokens.plain["reader"])
        assert await list_code(server.address, both) is grpc.StatusCode.OK
        token_only = Creds(token=tokens.plain["reader"], tls_ca=ca_file)
        assert await list_code(server.address, token_only) is grpc.StatusCode.UNAVAILABLE


async def test_the_tokens_file_gives_a_client_certificate_its_role(
    tmp_path: Path, pems: Pems, ca: trustme.CA, tokens: Tokens
) -> None:
    m = mutual(pems, ca, tokens)
    worker = m.client(pems, "billing-worker")
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=m.settings) as server:
        # not listed yet: refused, and the message quotes the subject to list
        async with Connection(server.address, **worker).aio_channel() as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await job_service_pb2_grpc.JobServiceStub(channel).ListJobs(LIST, timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        message = caught.value.details() or ""
        assert "is not listed in the tokens file" in message, message
        subject = message.split("client certificate ", 1)[1].split(" is not listed")[0]
        subject = subject.strip("'")
        assert "CN=billing-worker" in subject, subject
        with tokens.path.open("a") as f:
            f.write(f'\n[[certificate]]\nsubject = "{subject}"\nrole = "reader"\n')
        # listed as a reader, re-read without a restart: reads pass, changes are refused
        assert await list_code(server.address, worker) is grpc.StatusCode.OK
        async with Connection(server.address, **worker).aio_channel() as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.PauseQueue(jpb.PauseQueueRequest(name="emails"), timeout=5)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # a token still decides when one is sent
        both = Creds(**worker, token=tokens.plain["operator"])
        async with Connection(server.address, **both).aio_channel() as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            await stub.PauseQueue(jpb.PauseQueueRequest(name="emails"), timeout=5)


async def test_the_first_line_names_the_auth_and_tls_modes(
    tmp_path: Path, pems: Pems, ca: trustme.CA, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = server_files(pems, ca)
    clients = pems.write("clients.pem", trustme.CA().cert_pem.bytes())
    cases = [
        (SecuritySettings(), "none", "off"),
        (
            SecuritySettings(tls_cert=cert, tls_key=key, auth_tokens=str(tokens.path)),
            "tokens",
            "on",
        ),
        (
            SecuritySettings(tls_cert=cert, tls_key=key, tls_client_ca=clients),
            "client-certificates",
            "mutual",
        ),
    ]
    caplog.set_level(logging.INFO, logger="jobwheel.server")
    for settings, auth, tls in cases:
        caplog.clear()
        async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings):
            pass
        [first] = [r for r in caplog.records if " starting: " in r.getMessage()]
        assert f", auth {auth}, " in first.getMessage()
        assert (first.__dict__["auth"], first.__dict__["tls"]) == (auth, tls)


async def test_health_check_speaks_tls_as_the_server_does(
    tmp_path: Path, pems: Pems, ca: trustme.CA
) -> None:
    cert, key = server_files(pems, ca)
    ca_file = pems.write("ca.pem", ca.cert_pem.bytes())
    tls = {"JOBWHEEL_TLS_CERT": cert, "JOBWHEEL_TLS_KEY": key}
    settings = SecuritySettings(tls_cert=cert, tls_key=key)
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        listen = {"JOBWHEEL_LISTEN": f"0.0.0.0:{server.address.rpartition(':')[2]}"}

        async def check(env: dict[str, str]) -> int:
            return await asyncio.to_thread(healthcheck.main, 5.0, {**listen, **env})

        assert await check({**tls, "JOBWHEEL_TLS_CA": ca_file}) == 0
        assert await check({}) == 1  # plaintext to a TLS server
        assert await check(tls) == 0  # its own chain trusted, no CA file given
        assert await check({**tls, "JOBWHEEL_TLS_CERT": str(tmp_path / "missing.pem")}) == 1
    # mutual TLS: the check presents the server's certificate, accepted when the client CA
    # issued it, refused otherwise
    for client_ca, expected in ((ca, 0), (trustme.CA(), 1)):
        clients = pems.write("clients.pem", client_ca.cert_pem.bytes())
        settings = SecuritySettings(tls_cert=cert, tls_key=key, tls_client_ca=clients)
        async with running_server(f"sqlite:///{tmp_path / 'm.db'}", security=settings) as server:
            env = {**tls, "JOBWHEEL_TLS_CA": ca_file, "JOBWHEEL_TLS_CLIENT_CA": clients}
            env["JOBWHEEL_LISTEN"] = server.address
            assert await asyncio.to_thread(healthcheck.main, 5.0, env) == expected
            # the key given by a flag, not the variable: a clear failure, not a traceback
            keyless = {k: v for k, v in env.items() if k != "JOBWHEEL_TLS_KEY"}
            assert await asyncio.to_thread(healthcheck.main, 5.0, keyless) == 1


def test_the_certificate_name_is_its_first_dns_name_else_address_else_common_name(
    ca: trustme.CA,
) -> None:
    assert (
        healthcheck.certificate_name(
            ca.issue_cert("127.0.0.1", "jw.example").cert_chain_pems[0].bytes()
        )
        == "jw.example"
    )
    assert (
        healthcheck.certificate_name(ca.issue_cert("10.0.0.7").cert_chain_pems[0].bytes())
        == "10.0.0.7"
    )
    assert healthcheck.certificate_name(ca.cert_pem.bytes()) == ""  # this CA names nothing
