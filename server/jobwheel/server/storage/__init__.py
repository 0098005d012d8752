"""Durable storage: one SQLAlchemy Core implementation for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

from jobwheel.server.storage.dialect import Dialect, StorageUrlError, create_engines
from jobwheel.server.storage.migrations import (
    MIGRATIONS,
    Migration,
    ReadOnlyDatabase,
    SchemaVersionError,
    check_writable,
    migrate,
)
from jobwheel.server.storage.outage import DatabaseUnavailable
from jobwheel.server.storage.store import Store

__all__ = [
    "MIGRATIONS",
    "DatabaseUnavailable",
    "Dialect",
    "Migration",
    "ReadOnlyDatabase",
    "SchemaVersionError",
    "StorageUrlError",
    "Store",
    "open_store",
]


async def open_store(
    url: str,
    *,
    sqlite_synchronous: str = "FULL",
    migrations: Sequence[Migration] = MIGRATIONS,
) -> Store:
    """Connect to `url` (sqlite:///rel.db, sqlite:////abs.db, postgresql://user@host:port/db)
    and bring its schema up to date. `migrations` is replaceable for tests only."""
    engines = create_engines(url, sqlite_synchronous=sqlite_synchronous)
    try:
        await migrate(engines, migrations)
        await check_writable(engines)
    except BaseException:
        await engines.dispose()
        raise
    return Store(engines)
