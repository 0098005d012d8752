"""The storage conformance suite runs every test against every backend.

SQLite: a fresh file under tmp_path. PostgreSQL: a fresh schema per test in the database named by
JOBWHEEL_TEST_POSTGRES_URL (the store reaches it through libpq's `options=-c search_path=...`),
dropped afterwards, so tests and parallel test runs never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from jobwheel.server.storage import Store, open_store

PG_ENV = "JOBWHEEL_TEST_POSTGRES_URL"


def _unavailable(reason: str) -> None:
    """Skip locally; under CI a missing PostgreSQL must fail the run, never skip silently."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


async def _pg_admin(url: str) -> Any:
    try:
        return await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable(f"PostgreSQL at {PG_ENV} is not answering: {exc!r}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobwheel.db'}"
        return
    base = os.environ.get(PG_ENV, "")
    if not base:
        _unavailable(f"{PG_ENV} is not set")
    admin = await _pg_admin(base)
    schema = f"jwtest_{uuid.uuid4().hex[:16]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options={quote(f'-c search_path={schema}')}"
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


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
