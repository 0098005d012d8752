"""Durable storage: one SQLAlchemy Core implementation for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jobwheel.server.model import Event
from jobwheel.server.storage.dialect import POSTGRESQL, Dialect, StorageUrlError, create_engines
from jobwheel.server.storage.migrations import (
    MIGRATIONS,
    Migration,
    ReadOnlyDatabase,
    SchemaVersionError,
    check_writable,
    migrate,
)
from jobwheel.server.storage.outage import DatabaseUnavailable
from jobwheel.server.storage.pg_cycle import warm_up, warm_up_enqueues
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
    idempotency_window: int | None = None,
    event_sink: Callable[[list[Event]], None] | None = None,
    on_unreachable: Callable[[], None] | None = None,
    on_transaction: Callable[[str, float], None] | None = None,
) -> Store:
    """Connect to `url` (sqlite:///rel.db, sqlite:////abs.db, postgresql://user@host:port/db)
    and bring its schema up to date. An idempotency key holds for `idempotency_window` µs
    (None: forever). The store tells `event_sink` the events of each committed transaction,
    `on_unreachable()` when a call found the database unreachable, and `on_transaction(kind,
    seconds)` the duration of each "read" or "write" transaction. `migrations` is replaceable
    for tests only."""
    engines = create_engines(url, sqlite_synchronous=sqlite_synchronous)
    try:
        await migrate(engines, migrations)
        await check_writable(engines)
        if engines.dialect is POSTGRESQL:
            await warm_up(engines.write)
            if engines.enqueue is not None:
                await warm_up_enqueues(engines.enqueue)
        if engines.checkpointer is not None:
            engines.checkpointer.start()
    except BaseException:
        await engines.dispose()
        raise
    return Store(
        engines,
        idempotency_window=idempotency_window,
        event_sink=event_sink,
        on_unreachable=on_unreachable,
        on_transaction=on_transaction,
    )
