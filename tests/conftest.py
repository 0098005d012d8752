"""Fixtures shared by every suite: a real server on port 0 and its stubs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.v1 import job_service_pb2_grpc, worker_service_pb2_grpc


def postgres_url() -> str:
    """The test PostgreSQL URL; skips without one, except under CI where it must exist."""
    url = os.environ.get("JOBWHEEL_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but JOBWHEEL_TEST_POSTGRES_URL is not set")
        pytest.skip("JOBWHEEL_TEST_POSTGRES_URL is not set")
    return url


@dataclass
class Running:
    app: App
    channel: grpc.aio.Channel
    jobs: job_service_pb2_grpc.JobServiceStub
    workers: worker_service_pb2_grpc.WorkerServiceStub
    address: str


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobwheel.db'}"


@asynccontextmanager
async def running_server(db_url: str, **settings: Any) -> AsyncIterator[Running]:
    """An App on a free port with the test handlers loaded, and stubs bound to it."""
    import tests.handlers  # noqa: F401  (registers the test tasks)

    app = App(Settings(listen="127.0.0.1:0", db=db_url, grace_period=1.0, **settings))
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
