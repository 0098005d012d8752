from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.acceptance.process import ServerProcess
from tests.acceptance.tcp_proxy import TcpProxy
from tests.conftest import fresh_pg_schema


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'jobwheel.db'}", tmp_path / "server.log")
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
async def proxied_url() -> AsyncIterator[tuple[str, TcpProxy]]:
    """A PostgreSQL schema of its own, reached through a TCP proxy the test can cut."""
    async with fresh_pg_schema() as url:
        u = make_url(url)
        proxy = await TcpProxy(u.host or "127.0.0.1", u.port or 5432).start()
        try:
            yield u.set(host="127.0.0.1", port=proxy.port).render_as_string(False), proxy
        finally:
            await proxy.close()
