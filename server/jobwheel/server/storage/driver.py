"""The driver's own connection under a SQLAlchemy AsyncConnection, for the statements the
store sends below SQLAlchemy (bulk_writes.py, pg_cycle.py, events.py), and waiting for work on
it to end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


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


async def to_completion(step: Awaitable[T]) -> T:
    """`await step`, run to its end even if the caller is cancelled meanwhile; the
    cancellation is raised after. Work handed to a driver's thread runs whether or not its
    caller still waits, and a connection given back (or rolled back) before it ends would
    have it run in the next holder's transaction."""
    task = asyncio.ensure_future(step)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError as exc:
            if task.done():
                raise
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    return result
