"""The storage conformance suite runs every test against every backend.

SQLite: a fresh file under tmp_path. PostgreSQL: a fresh schema per test in the database named by
JOBWHEEL_TEST_POSTGRES_URL (the store reaches it through libpq's `options=-c search_path=...`),
dropped afterwards, so tests and parallel test runs never see each other's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from jobwheel.server.storage import Store, open_store


@pytest.fixture
def store_url(db_url: str) -> str:
    """A URL to an empty database of each backend (the shared `db_url` fixture)."""
    return db_url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def backend(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgres"


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on a fresh SQLite file, for what only SQLite has."""
    s = await open_store(f"sqlite:///{tmp_path / 'sqlite.db'}")
    try:
        yield s
    finally:
        await s.close()
