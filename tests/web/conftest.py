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

import grpc
import httpx
import pytest
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.server.web.auth import Authenticator, Principal, Role, StaticTokens
from jobwheel.v1 import job_service_pb2_grpc

from tests.conftest import unavailable

CHROMIUM = os.environ.get("JOBWHEEL_TEST_CHROMIUM", "/usr/bin/chromium")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')

# the test's own token source: the seam a token store plugs into
TOKENS = {
    "admin-token": Principal("ada", Role.ADMIN),
    "operator-token": Principal("otto", Role.OPERATOR),
    "reader-token": Principal("rita", Role.READER),
    "billing-token": Principal("bill", Role.OPERATOR, frozenset({"billing"})),
}


@dataclass
class Dashboard:
    app: App
    url: str
    jobs: job_service_pb2_grpc.JobServiceStub


@asynccontextmanager
async def dashboard_server(
    tmp_path: Path, authenticator: Authenticator | None = None, **settings: Any
) -> AsyncIterator[Dashboard]:
    import tests.handlers  # noqa: F401  (registers the test tasks)

    app = App(
        Settings(
            listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            db=f"sqlite:///{tmp_path / 'jobwheel.db'}",
            grace_period=1.0,
            **settings,
        ),
        authenticator=authenticator,
    )
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Dashboard(
            app, f"http://127.0.0.1:{app.http_port}", job_service_pb2_grpc.JobServiceStub(channel)
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
    """Authentication on, with the tokens of TOKENS."""
    async with dashboard_server(tmp_path, StaticTokens(TOKENS)) as running:
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
