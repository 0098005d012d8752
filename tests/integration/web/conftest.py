"""A real server with the dashboard on a free port, an HTTP client and a real Chromium."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobwheel.client.connection import Connection
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.server.security.roles import Role
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.v1 import job_service_pb2_grpc

from tests.conftest import unavailable
from tests.integration.security.conftest import Tokens

CHROMIUM = os.environ.get("JOBWHEEL_TEST_CHROMIUM", "/usr/bin/chromium")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

# the principals of the tokens file the authenticated dashboards use: name -> (role, queues)
PRINCIPALS: dict[str, tuple[Role, tuple[str, ...]]] = {
    "ada": (Role.ADMIN, ()),
    "otto": (Role.OPERATOR, ()),
    "rita": (Role.READER, ()),
    "wendy": (Role.WORKER, ()),
    "bill": (Role.OPERATOR, ("billing",)),
}


class TokensFile(Tokens):
    """A tokens file as `jobwheel-server token create` writes it, and its plain tokens; entries
    can be revoked, and it can hold the dashboards' PRINCIPALS."""

    def remove(self, name: str) -> None:
        """Revokes `name`'s token: the file is rewritten without its entry."""
        del self.plain[name]
        kept = self.path.read_text().split("\n[[token]]\n")
        self.path.write_text("\n[[token]]\n".join(e for e in kept if f'name = "{name}"' not in e))

    @classmethod
    def with_principals(cls, path: Path) -> TokensFile:
        tokens = cls(path)
        for name, (role, queues) in PRINCIPALS.items():
            tokens.add(name, role, queues)
        return tokens


@dataclass
class Dashboard:
    app: App
    url: str
    jobs: job_service_pb2_grpc.JobServiceStub
    tokens: TokensFile | None = None

    def token(self, name: str) -> str:
        assert self.tokens is not None, "a dashboard without authentication"
        return self.tokens.plain[name]


@asynccontextmanager
async def dashboard_server(
    tmp_path: Path, tokens: TokensFile | None = None, ca_file: str | None = None, **settings: Any
) -> AsyncIterator[Dashboard]:
    """A server with the dashboard; with `tokens`, both require a token of that file (the
    test's gRPC stub uses the admin's); `ca_file`: the stub trusts that CA (the server serves
    TLS)."""
    import tests.handlers  # noqa: F401  (registers the test tasks)

    security = SecuritySettings(auth_tokens=str(tokens.path)) if tokens else SecuritySettings()
    app = App(
        Settings(
            listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            db=f"sqlite:///{tmp_path / 'jobwheel.db'}",
            grace_period=1.0,
            security=settings.pop("security", security),
            **settings,
        )
    )
    port = await app.start()
    assert app.web is not None
    admin = tokens.plain["ada"] if tokens else None
    connection = Connection(f"127.0.0.1:{port}", token=admin, tls_ca=ca_file)
    channel = connection.aio_channel()
    try:
        yield Dashboard(
            app,
            f"{app.web.scheme}://127.0.0.1:{app.http_port}",
            job_service_pb2_grpc.JobServiceStub(channel),
            tokens,
        )
    finally:
        await channel.close()
        await app.stop(0.5)


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[Dashboard]:
    """Authentication off: everyone is an anonymous admin."""
    async with dashboard_server(tmp_path) as running:
        yield running


@pytest.fixture
async def dash_auth(tmp_path: Path) -> AsyncIterator[Dashboard]:
    """Authentication on: a tokens file with a token for each of PRINCIPALS."""
    tokens = TokensFile.with_principals(tmp_path / "tokens.toml")
    async with dashboard_server(tmp_path, tokens) as running:
        yield running


@pytest.fixture
async def http(dash: Dashboard) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dash.url, timeout=10) as client:
        yield client


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    """The CSRF token of the form on `path` (which also starts the session)."""
    page = await client.get(path)
    found = CSRF_RE.search(page.text)
    assert found, f"no CSRF token on {path}: {page.status_code}"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> None:
    csrf = await csrf_of(client, "/signin")
    reply = await client.post("/signin", data={"token": token, "csrf_token": csrf})
    assert reply.status_code == 303, reply.text


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, driven by Playwright (never a browser Playwright downloads)."""
    if not shutil.which(CHROMIUM):
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("the playwright package is not installed")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()
