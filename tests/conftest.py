"""Fixtures shared by every suite: a real server on port 0 and its stubs."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from jobwheel.server.app import App
from jobwheel.server.clock import Clock
from jobwheel.server.config import Settings
from jobwheel.server.event_loop import loop_factory
from jobwheel.v1 import job_service_pb2_grpc, worker_service_pb2_grpc

PG_ENV = "JOBWHEEL_TEST_POSTGRES_URL"
# Taken when PG_ENV is unset and a PostgreSQL answers here: `make test` on a machine with a
# local PostgreSQL runs the PostgreSQL half of the suites without any variable to set.
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    if PG_ENV not in os.environ and _answers("127.0.0.1", 5432):
        os.environ[PG_ENV] = PG_DEFAULT  # subprocesses (acceptance servers) inherit it
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # `make test` runs several (pytest-xdist)
    if worker and os.environ.get(PG_ENV):
        os.environ[PG_ENV] = asyncio.run(_worker_database(os.environ[PG_ENV], worker))


async def _worker_database(url: str, worker: str) -> str:
    """The URL of a database of this test worker's own beside `url`'s, created if missing:
    VACUUM marks pages all-visible (what index-only plans need) only past every transaction
    open in the database, and another worker's tests always hold some. `url` itself where
    that cannot be had (the tests then report what is wrong with it)."""
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'postgres'}_{worker}"
    try:
        admin = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return url
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError:
        return url  # e.g. no right to create databases: the workers share url's
    finally:
        await admin.close()
    return urlunsplit(parts._replace(path=f"/{name}"))


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests marked `uvloop` run on it (where it is installed); the others on asyncio's own
    loop."""
    # where uvloop is missing, auto gives None: the test's own importorskip tells
    factory = loop_factory("auto") if item.get_closest_marker("uvloop") is not None else None
    return {"asyncio": asyncio.new_event_loop} if factory is None else {"uvloop": factory}


def unavailable(reason: str) -> NoReturn:
    """Skip locally; under CI a missing PostgreSQL must fail the run, never skip silently."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@asynccontextmanager
async def fresh_pg_schema() -> AsyncIterator[str]:
    """A URL to a new, empty schema of the test PostgreSQL database, dropped afterwards."""
    base = os.environ.get(PG_ENV, "")
    if not base:
        unavailable(f"{PG_ENV} is not set")
    try:
        admin = await asyncpg.connect(base)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_ENV} is not answering: {exc!r}")
    schema = f"jwtest_{uuid.uuid4().hex[:16]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options={quote(f'-c search_path={schema}')}"
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


@dataclass
class Running:
    app: App
    channel: grpc.aio.Channel
    jobs: job_service_pb2_grpc.JobServiceStub
    workers: worker_service_pb2_grpc.WorkerServiceStub
    address: str


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each backend: the API suites run against both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobwheel.db'}"
        return
    async with fresh_pg_schema() as url:
        yield url


@asynccontextmanager
async def running_server(
    db_url: str, clock: Clock | None = None, **settings: Any
) -> AsyncIterator[Running]:
    """An App on a free port with the test handlers loaded, and stubs bound to it; `clock`
    (e.g. a FakeClock) replaces the system's."""
    import tests.handlers  # noqa: F401  (registers the test tasks)

    app = App(Settings(listen="127.0.0.1:0", db=db_url, grace_period=1.0, **settings), clock)
    port = await app.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield Running(
            app,
            channel,
            job_service_pb2_grpc.JobServiceStub(channel),
            worker_service_pb2_grpc.WorkerServiceStub(channel),
            address,
        )
    finally:
        await channel.close()
        await app.stop(0.5)


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Running]:
    async with running_server(db_url) as running:
        yield running
