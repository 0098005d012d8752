"""The driver's own connection under a SQLAlchemy AsyncConnection, for the statements the
store sends below SQLAlchemy (bulk_writes.py, pg_cycle.py, events.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


async def driver_connection(conn: AsyncConnection) -> Any:
    """`conn`'s aiosqlite or asyncpg connection. AsyncConnection.get_raw_connection starts a
    greenlet only to read an attribute (about 50 µs of the event loop's CPU a call on a
    2-core machine); that read does I/O only when the connection must be re-established,
    which is left to it."""
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        # neither closed nor invalidated: the pooled connection is at hand, no I/O
        driver = sync.connection.driver_connection
    else:
        driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return driver
