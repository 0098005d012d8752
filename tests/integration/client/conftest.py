"""The client suites run against SQLite only: tests/integration/storage covers the backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from jobwheel.v1 import job_service_pb2_grpc

from tests.integration.client.scripted import Scripted


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobwheel.db'}"


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, str]]:
    service = Scripted()
    server = grpc.aio.server()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        service.open()
        await server.stop(None)


@pytest.fixture
def answering(scripted: tuple[Scripted, str]) -> str:
    """The scripted server's address, answering every call at once."""
    service, address = scripted
    service.open()
    return address
