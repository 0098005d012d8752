"""What every part of the Store shares: the engines, transactions and event hand-off.

Write methods run in `self._write()` (on SQLite: the single write connection, BEGIN
IMMEDIATE), read methods in `self._read()`. Each method is one transaction, so a caller's await
returns only after commit. Never open `_write()` inside `_write()`: on SQLite the store hands
its single write connection from write to write (held_connections.py), so the inner one would
wait until SQLITE_WRITER_WAIT_S runs out.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from jobwheel.server.model import Event
from jobwheel.server.storage.dialect import (
    PG_HELD_MAX,
    PG_POOL_KEPT,
    PG_WAIT_S,
    SQLITE_READER_WAIT_S,
    SQLITE_READERS_KEPT,
    SQLITE_READERS_MAX,
    SQLITE_WRITER_WAIT_S,
    Dialect,
    Engines,
)
from jobwheel.server.storage.held_connections import HeldConnections
from jobwheel.server.storage.outage import DatabaseUnavailable, is_unreachable, reason
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class StoreBase:
    def __init__(
        self,
        engines: Engines,
        *,
        idempotency_window: int | None = None,
        event_sink: Callable[[list[Event]], None] | None = None,
        on_unreachable: Callable[[], None] | None = None,
        on_transaction: Callable[[str, float], None] | None = None,
    ) -> None:
        self._engines = engines
        # the connections, held from transaction to transaction (held_connections.py); None
        # (SQLite in memory): each transaction checks one out of the pool
        self._writer: HeldConnections | None = None
        self._readers: HeldConnections | None = None
        dialect = engines.dialect
        # PostgreSQL: enqueues on a connection of their own (dialect.PG_ENQUEUE_SETTINGS)
        self._enqueuer: HeldConnections | None = None
        if engines.enqueue is not None:
            self._enqueuer = HeldConnections(
                engines.enqueue, dialect, size=1, keep=1, wait_s=PG_WAIT_S
            )
        if not dialect.single_writer:  # PostgreSQL: one pool for both
            self._writer = self._readers = HeldConnections(
                engines.write, dialect, size=PG_HELD_MAX, keep=PG_POOL_KEPT, wait_s=PG_WAIT_S
            )
        elif engines.read is not engines.write:
            self._writer = HeldConnections(
                engines.write, dialect, size=1, keep=1, wait_s=SQLITE_WRITER_WAIT_S
            )
            self._readers = HeldConnections(
                engines.read,
                dialect,
                size=SQLITE_READERS_MAX,
                keep=SQLITE_READERS_KEPT,
                wait_s=SQLITE_READER_WAIT_S,
            )
        # Told of every event after its transaction committed (the WatchJobs bus).
        self.event_sink = event_sink
        # how long an idempotency key holds (µs); None: forever
        self.idempotency_window = idempotency_window
        # told the kind ("read"/"write") and seconds of each transaction (metrics)
        self.on_transaction = on_transaction
        # Told when a call found the database unreachable (health follows it).
        self.on_unreachable = on_unreachable

    @asynccontextmanager
    async def _outages(self) -> AsyncIterator[None]:
        """Turns a lost or refused connection into DatabaseUnavailable; other errors pass."""
        try:
            yield
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            if self.on_unreachable is not None:
                self.on_unreachable()
            raise DatabaseUnavailable(f"the database is unreachable: {reason(exc)}") from exc

    def _emit(self, committed: list[Event]) -> None:
        if committed and self.event_sink is not None:
            self.event_sink(committed)

    @property
    def dialect(self) -> Dialect:
        return self._engines.dialect

    @property
    def write_engine(self) -> AsyncEngine:
        return self._engines.write

    @property
    def read_engine(self) -> AsyncEngine:
        return self._engines.read

    async def close(self) -> None:
        if self._readers is not None and self._readers is not self._writer:
            await self._readers.close()
        if self._writer is not None:
            await self._writer.close()
        if self._enqueuer is not None:
            await self._enqueuer.close()
        await self._engines.dispose()

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction (on SQLite: BEGIN IMMEDIATE on the single write connection)."""
        return self._timed("write", _transaction(self._write_connection()))

    def _raw_write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """The write connection with no transaction begun: for work that runs its own
        transaction on the driver's connection (see bulk_writes.in_sqlite_thread)."""
        return self._timed("write", self._write_connection())

    def _enqueue_write(self, *, begun: bool = True) -> AbstractAsyncContextManager[AsyncConnection]:
        """`_write()` for an enqueue (`_raw_write()` when not `begun`): on PostgreSQL on the
        enqueues' own connection, whose statements keep their generic plans."""
        if self._enqueuer is None:
            return self._write() if begun else self._raw_write()
        opening = self._enqueuer.connect()
        return self._timed("write", _transaction(opening) if begun else opening)

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read transaction."""
        return self._timed("read", _transaction(self._read_connection()))

    def _raw_read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read connection with no transaction begun: for a read of one statement on the
        driver's connection (a statement reads a consistent snapshot on its own): on SQLite
        one hop to the driver's thread (bulk_writes.in_sqlite_thread) where a read
        transaction through SQLAlchemy takes three (BEGIN, the statement, COMMIT), on
        PostgreSQL one round trip (pg_cycle.driver_statement) where it takes three too."""
        return self._timed("read", self._read_connection())

    def _write_connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """The write connection (held: held_connections.py), no transaction begun, not timed."""
        if self._writer is None:
            return self._engines.write.connect()
        return self._writer.connect()

    def _read_connection(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read connection with no transaction begun, not timed: for a read that streams
        for a while (events.snapshot)."""
        if self._readers is None:
            return self._engines.read.connect()
        return self._readers.connect()

    @asynccontextmanager
    async def _timed(
        self, kind: str, opening: AbstractAsyncContextManager[AsyncConnection]
    ) -> AsyncIterator[AsyncConnection]:
        """`opening`'s connection, a lost database reported as DatabaseUnavailable, and its
        seconds told to on_transaction as `kind` ("read" or "write")."""
        start = time.perf_counter()
        async with self._outages(), opening as conn:
            yield conn
        if self.on_transaction is not None:
            self.on_transaction(kind, time.perf_counter() - start)


@asynccontextmanager
async def _transaction(
    opening: AbstractAsyncContextManager[AsyncConnection],
) -> AsyncIterator[AsyncConnection]:
    """A transaction on `opening`'s connection (BEGIN as the engine's "begin" event sends
    it), as engine.begin() gives one on a pooled connection."""
    async with opening as conn, conn.begin():
        yield conn
