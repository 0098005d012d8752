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
are closed, as the pool closed its overflow. A release that must wait (a rollback, a close)
runs to its end even when its caller is cancelled, as SQLAlchemy's own check-in does.

Each pool keeps room for code that uses it directly (migrations, tests, a LISTEN); SQLite's
busy timeout orders a second writer with the held one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from jobwheel.server.storage.dialect import Dialect
from jobwheel.server.storage.driver import driver_connection, to_completion
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
            if conn is None or not self._open(conn):
                conn = await self._replace(conn)
            lost = False
            try:
                yield conn
            except BaseException as exc:
                lost = is_unreachable(exc)
                raise
            finally:
                if not lost and self._lendable(conn):
                    self._idle.append(conn)  # the usual end: nothing to wait for
                else:
                    await to_completion(self._let_go(conn, lost))
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
        if old is not None:  # its driver's connection is closed: given up as a lost one
            await self._let_go(old, lost=True)
        return await self._engine.connect()

    def _open(self, conn: AsyncConnection) -> bool:
        """`conn` and its driver's connection are open, and the driver's out of any
        transaction, as far as known without I/O (the driver learns of a backend ended
        while the connection sat idle)."""
        sync = conn.sync_connection
        if sync is None or sync.closed or sync.invalidated:
            return False
        return self._dialect.driver_idle(sync.connection.driver_connection)

    def _lendable(self, conn: AsyncConnection) -> bool:
        """`conn` may go back on the free list as it is: open, out of any transaction, with
        the engine's own options, and room among the ones kept."""
        if self._closed or len(self._idle) >= self._keep or not self._open(conn):
            return False
        sync = conn.sync_connection
        return sync is not None and not sync.in_transaction() and not self._changed(conn)

    def _changed(self, conn: AsyncConnection) -> bool:
        sync = conn.sync_connection
        return sync is not None and bool(
            self._characteristics.intersection(sync.get_execution_options())
        )

    async def _let_go(self, conn: AsyncConnection, lost: bool) -> None:
        """The slow way back: a transaction left open is rolled back, and a connection that
        is lost, changed or past the ones kept is closed."""
        if conn.closed:
            return
        if lost and not conn.invalidated:
            await conn.invalidate()  # not handed out again
        if not conn.invalidated and not self._closed:
            try:
                if conn.in_transaction():
                    await conn.rollback()
                await self._dialect.end_driver_transaction(await driver_connection(conn))
            except Exception:  # e.g. lost while the rollback ran
                await conn.invalidate()
            if self._lendable(conn):
                self._idle.append(conn)
                return
        if not (conn.invalidated or self._closed or self._changed(conn)):
            # past the ones kept (or its driver's connection closed): closed, rather than
            # kept in the pool's own queue; a changed one goes back for the pool to restore
            await conn.invalidate()
        await conn.close()

    @property
    def all_lent(self) -> bool:
        """Every connection is lent: a caller now would wait."""
        return self._slots.locked()

    async def close(self) -> None:
        """Returns the idle connections to the pool; one in use goes back at its release."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
