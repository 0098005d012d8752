"""A SQLite file's single write connection, held by the store between its writes.

Every write takes the one writer connection anyway (the pool holds one), so the store keeps
it checked out and hands it from write to write under an asyncio.Lock. A pool check-out and
check-in each start a greenlet and run the pool's bookkeeping: about 200 µs of the event
loop's CPU a write on a 2-core machine, a third of a one-job enqueue's. What the pool did at
check-in is done at release: a transaction left open is rolled back. A connection found
closed or invalidated is replaced by a new one from the pool.

The pool keeps one connection more (max_overflow) for code that uses the write engine
directly (migrations, tests); SQLite's busy timeout orders it with the held one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from jobwheel.server.storage.driver import driver_connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class HeldWriter:
    """`connect()`: the writer connection, one caller at a time, in the order they asked.
    A caller that waits longer than `wait_s` seconds gets sqlalchemy.exc.TimeoutError, as
    from an exhausted pool (api/errors.py answers RESOURCE_EXHAUSTED)."""

    def __init__(self, engine: AsyncEngine, wait_s: float) -> None:
        self._engine = engine
        self._wait_s = wait_s
        self._lock = asyncio.Lock()
        self._conn: AsyncConnection | None = None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        await self._acquire()
        try:
            conn = self._conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self._conn = await self._replace(conn)
            try:
                yield conn
            finally:
                await _reset(conn)
        finally:
            self._lock.release()

    async def _acquire(self) -> None:
        if not self._lock.locked():
            await self._lock.acquire()  # free: no suspension, no timer
            return
        try:
            async with asyncio.timeout(self._wait_s):
                await self._lock.acquire()
        except TimeoutError:
            raise sa_exc.TimeoutError(
                f"waited {self._wait_s:g} s for the SQLite write connection"
            ) from None

    async def _replace(self, old: AsyncConnection | None) -> AsyncConnection:
        if old is not None:
            self._conn = None
            await old.close()  # an invalidated connection is discarded by the pool
        return await self._engine.connect()

    async def close(self) -> None:
        """Returns the connection to the pool, after the write in progress (if any)."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()


async def _reset(conn: AsyncConnection) -> None:
    """What the pool did at check-in (dialect._on_reset): a transaction left open, through
    SQLAlchemy or on the driver's connection, is rolled back."""
    if conn.closed or conn.invalidated:
        return
    if conn.in_transaction():
        await conn.rollback()
        return
    driver = await driver_connection(conn)
    if driver._conn is not None and driver._conn.in_transaction:
        await driver._execute(driver._conn.rollback)
