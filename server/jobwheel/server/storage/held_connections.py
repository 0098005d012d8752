"""The store's database connections, held from one transaction to the next.

A check-out of SQLAlchemy's async pool and the return each start a greenlet and run the
pool's bookkeeping: on a 2-core machine about 120 µs of the event loop's CPU per transaction
on SQLite (half of a one-job enqueue's), 150 µs on PostgreSQL. The store keeps its
connections checked out instead and hands them from transaction to transaction from a free
list (on SQLite the single writer under a lock of its own). What the pool did at check-in is
done at release: a transaction left open is rolled back, through SQLAlchemy or on the
driver's own connection, and a connection whose isolation level a caller set goes back to the
pool, which restores it. A connection that met an outage is invalidated at release; one found
closed or invalidated is replaced by a new one from the pool. Connections past the ones kept
are closed, as the pool closed its overflow.

Each pool keeps room for code that uses it directly (migrations, tests, a LISTEN); SQLite's
busy timeout orders a second writer with the held one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from jobwheel.server.storage.dialect import Dialect
from jobwheel.server.storage.driver import driver_connection
from jobwheel.server.storage.outage import is_unreachable
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class HeldConnections:
    """`connect()` lends one of at most `size` connections of `engine` at once, to callers in
    the order they asked; `keep` of them stay open between loans. A caller that waits longer
    than `wait_s` seconds gets sqlalchemy.exc.TimeoutError, as from an exhausted pool
    (api/errors.py answers RESOURCE_EXHAUSTED)."""

    def __init__(
        self, engine: AsyncEngine, dialect: Dialect, *, size: int, keep: int, wait_s: float
    ) -> None:
        self._engine = engine
        self._dialect = dialect
        self._size = size
        self._keep = keep
        self._wait_s = wait_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[AsyncConnection] = []  # the last one used on top: its pages are warm
        self._closed = False
        # options that change the connection itself (isolation level, read only), as
        # SQLAlchemy's DefaultDialect names them
        names = getattr(engine.dialect, "connection_characteristics", ("isolation_level",))
        self._characteristics = frozenset(names)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        await self._acquire()
        try:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed or conn.invalidated:
                conn = await self._replace(conn)
            try:
                yield conn
            except BaseException as exc:
                if is_unreachable(exc) and not conn.closed and not conn.invalidated:
                    await conn.invalidate()  # lost: not handed out again
                raise
            finally:
                await self._release(conn)
        finally:
            self._slots.release()

    async def _acquire(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: no suspension, no timer
            return
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise sa_exc.TimeoutError(
                f"waited {self._wait_s:g} s for a database connection of the store"
            ) from None

    async def _replace(self, old: AsyncConnection | None) -> AsyncConnection:
        if old is not None and not old.closed:
            await old.close()  # an invalidated connection is discarded by the pool
        return await self._engine.connect()

    async def _release(self, conn: AsyncConnection) -> None:
        if conn.closed:
            return
        if conn.invalidated or self._closed:
            await conn.close()  # the pool discards an invalidated one
            return
        try:
            usable = await self._reset(conn)
        except Exception:  # e.g. lost while the rollback ran
            usable = False
        if not usable:
            await conn.invalidate()
            await conn.close()
            return
        sync = conn.sync_connection
        if sync is not None and self._characteristics.intersection(sync.get_execution_options()):
            # e.g. a snapshot's isolation level: the pool's check-in restores the default
            await conn.close()
            return
        if len(self._idle) < self._keep:
            self._idle.append(conn)
            return
        await conn.invalidate()  # closed, rather than kept in the pool's own queue
        await conn.close()

    async def close(self) -> None:
        """Returns the idle connections to the pool; one in use goes back at its release."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _reset(self, conn: AsyncConnection) -> bool:
        """What the pool did at check-in (dialect._on_reset on SQLite): a transaction left
        open is rolled back. False: the driver's connection is closed."""
        if conn.in_transaction():
            await conn.rollback()
        return await self._dialect.reset_driver(await driver_connection(conn))
