"""The dashboard under the server's security set-up: tokens-file and JWT sign-in, the one
role table, revocation, TLS with the gRPC certificate, mutual TLS, and the exposure rule."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest
import trustme
from jobwheel.client.connection import Connection
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.server.security.settings import SecurityConfigError, SecuritySettings
from jobwheel.v1 import job_service_pb2_grpc

from tests.integration.security.test_jwt import AUDIENCE, ISSUER, Issuer
from tests.integration.web.conftest import Dashboard, TokensFile, csrf_of, dashboard_server, sign_in
from tests.integration.web.test_http import CSRF, enqueue, later


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def pem_files(ca: trustme.CA, tmp_path: Path, name: str, *hosts: str) -> tuple[str, str]:
    """A certificate for `hosts` (or a client named `name`) and its key, as PEM files."""
    cert = ca.issue_cert(*(hosts or (f"{name}.example",)), common_name=name)
    chain, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return str(chain), str(key)


def first_pem(path: str) -> str:
    text = Path(path).read_text()
    return text[: text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]


def trusting(ca: trustme.CA, client: tuple[str, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client is not None:
        context.load_cert_chain(*client)
    return context


async def test_a_tokens_file_token_signs_in_and_its_removal_signs_out(
    dash_auth: Dashboard,
) -> None:
    dash = dash_auth
    assert dash.tokens is not None
    job = await enqueue(dash, schedule=later())
    async with httpx.AsyncClient(base_url=dash.url) as reader:
        await sign_in(reader, dash.token("rita"))
        page = await reader.get(f"/jobs/{job.id}")
        assert page.status_code == 200 and "rita" in page.text and "reader" in page.text
        assert f"/jobs/{job.id}/cancel" not in page.text
        # the token is checked on every request: taking it out of the file ends the session
        dash.tokens.remove("rita")
        gone = await reader.get(f"/jobs/{job.id}")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/signin")
    async with httpx.AsyncClient(base_url=dash.url) as worker:
        csrf = await csrf_of(worker, "/signin")
        refused = await worker.post(
            "/signin", data={"token": dash.token("wendy"), "csrf_token": csrf}
        )
        assert refused.status_code == 403 and "may not use the dashboard" in refused.text
        assert (await worker.get("/jobs")).status_code == 303  # not signed in


async def test_buttons_and_checks_follow_the_servers_role_table(dash_auth: Dashboard) -> None:
    dash = dash_auth
    await enqueue(dash, schedule=later(), queue="mail")
    async with (
        httpx.AsyncClient(base_url=dash.url) as operator,
        httpx.AsyncClient(base_url=dash.url) as admin,
    ):
        await sign_in(operator, dash.token("otto"))
        await sign_in(admin, dash.token("ada"))
        # PauseQueue is an operator's, UpdateQueue an admin's
        queues = (await operator.get("/queues")).text
        assert "/queues/mail/pause" in queues and "/queues/mail/limits" not in queues
        refused = await operator.get("/queues/mail/limits")
        assert refused.status_code == 403 and "needs role admin" in refused.text
        token = CSRF(queues)
        limits = {"csrf_token": token, "max_concurrency": "3"}
        assert (await operator.post("/queues/mail/limits", data=limits)).status_code == 403
        assert (
            await operator.post("/queues/mail/pause", data={"csrf_token": token})
        ).status_code == 303
        queues = (await admin.get("/queues")).text
        assert "/queues/mail/resume" in queues and "/queues/mail/limits" in queues
        limits["csrf_token"] = CSRF(queues)
        assert (await admin.post("/queues/mail/limits", data=limits)).status_code == 303


async def test_a_jwt_signs_in_with_its_role_and_queues(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path / "jwks.json")
    security = SecuritySettings(
        auth_jwks=str(issuer.path), auth_jwt_issuer=ISSUER, auth_jwt_audience=AUDIENCE
    )
    async with dashboard_server(tmp_path, security=security) as dash:
        address = f"127.0.0.1:{dash.app.port}"
        async with Connection(address, token=issuer.token(role="admin")).aio_channel() as ch:
            dash.jobs = job_service_pb2_grpc.JobServiceStub(ch)
            mine = await enqueue(dash, schedule=later(), queue="billing")
            other = await enqueue(dash, schedule=later(), queue="mail")
        async with httpx.AsyncClient(base_url=dash.url) as browser:
            await sign_in(browser, issuer.token(sub="jo", role="operator", queues=["billing"]))
            listing = (await browser.get("/jobs")).text
            assert "jo" in listing and mine.id in listing and other.id not in listing
            assert f"/jobs/{mine.id}/cancel" in (await browser.get(f"/jobs/{mine.id}")).text
            assert (await browser.get(f"/jobs/{other.id}")).status_code == 404
        async with httpx.AsyncClient(base_url=dash.url) as stranger:
            csrf = await csrf_of(stranger, "/signin")
            forged = Issuer(tmp_path / "other.json").token(role="admin")  # a key not published
            reply = await stranger.post("/signin", data={"token": forged, "csrf_token": csrf})
            assert reply.status_code == 401


async def test_tls_serves_the_dashboard_with_the_grpc_certificate(
    tmp_path: Path, ca: trustme.CA
) -> None:
    cert, key = pem_files(ca, tmp_path, "server", "127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tokens = TokensFile.with_principals(tmp_path / "tokens.toml")
    security = SecuritySettings(tls_cert=cert, tls_key=key, auth_tokens=str(tokens.path))
    async with dashboard_server(tmp_path, tokens, str(ca_file), security=security) as dash:
        assert dash.url.startswith("https://")
        job = await enqueue(dash, schedule=later())  # gRPC over TLS, same certificate
        async with httpx.AsyncClient(base_url=dash.url, verify=trusting(ca)) as browser:
            first = await browser.get("/signin")
            assert first.status_code == 200 and "Secure" in first.headers["set-cookie"]
            await sign_in(browser, dash.token("rita"))
            assert job.id in (await browser.get("/jobs")).text
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the port
            async with httpx.AsyncClient() as plain:
                await plain.get(dash.url.replace("https://", "http://") + "/signin")
        # SIGHUP: a new certificate in the same files is served to new connections
        port = dash.app.http_port
        before = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
        renewed = pem_files(ca, tmp_path, "server", "127.0.0.1")  # the same two files
        assert renewed == (cert, key)
        dash.app.reload()
        after = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port))
        assert after != before
        assert after == ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(first_pem(cert)))


async def test_mutual_tls_asks_browsers_for_a_client_certificate(
    tmp_path: Path, ca: trustme.CA
) -> None:
    cert, key = pem_files(ca, tmp_path, "server", "127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    security = SecuritySettings(tls_cert=cert, tls_key=key, tls_client_ca=str(ca_file))
    async with dashboard_server(tmp_path, None, str(ca_file), security=security) as dash:
        client = pem_files(ca, tmp_path, "browser")
        async with httpx.AsyncClient(base_url=dash.url, verify=trusting(ca, client)) as ok:
            assert (await ok.get("/jobs")).status_code == 200
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(base_url=dash.url, verify=trusting(ca)) as bare:
                await bare.get("/jobs")


async def test_a_public_dashboard_needs_tls_and_authentication(
    tmp_path: Path, ca: trustme.CA
) -> None:
    def app(http_listen: str, security: SecuritySettings) -> App:
        return App(
            Settings(
                listen="127.0.0.1:0",
                http_listen=http_listen,
                db=f"sqlite:///{tmp_path / 'j.db'}",
                security=security,
            )
        )

    with pytest.raises(SecurityConfigError, match=r"^--http-listen: refusing to listen on 0\."):
        await app("0.0.0.0:0", SecuritySettings()).start()
    cert, key = pem_files(ca, tmp_path, "server", "127.0.0.1")
    with pytest.raises(SecurityConfigError, match="without authentication"):
        await app("0.0.0.0:0", SecuritySettings(tls_cert=cert, tls_key=key)).start()
    assert not (tmp_path / "j.db").exists()  # refused before anything started
