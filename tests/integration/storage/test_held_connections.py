"""storage/held_connections.py: the store holds its connections from transaction to
transaction, cleans up after each as the pool's check-in did, and replaces a broken or lost
one (on every backend; the readers' limits on SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from jobwheel.server.model import JobFilter
from jobwheel.server.storage import DatabaseUnavailable, Store, open_store
from jobwheel.server.storage.dialect import SQLITE, SQLITE_READERS_KEPT, SQLITE_READERS_MAX
from jobwheel.server.storage.driver import driver_connection
from jobwheel.server.storage.held_connections import HeldConnections
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.storage.factories import new_job


def checkouts(engine: AsyncEngine) -> list[Any]:
    seen: list[Any] = []
    event.listen(engine.sync_engine.pool, "checkout", lambda *args: seen.append(args))
    return seen


def checked_out(engine: AsyncEngine) -> int:
    return int(engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_transactions_check_a_connection_out_once(store: Store) -> None:
    writes, reads = checkouts(store.write_engine), checkouts(store.read_engine)
    for i in range(5):
        [(job, _)] = await store.insert_jobs([new_job(task=f"t{i}")])
        assert await store.get_job(job.id) is not None  # a read of one statement
        assert len(await store.list_jobs(JobFilter(), limit=10)) == i + 1  # a transaction
    # at the first of each (one engine on PostgreSQL: its reads reuse the writes' connection);
    # the pool's way: one per transaction
    assert (len(writes), len(reads)) == (1, 1)


async def test_a_burst_of_reads_leaves_the_kept_readers_open(sqlite_store: Store) -> None:
    await sqlite_store.insert_jobs([new_job()])
    engine = sqlite_store.read_engine
    most = 0

    async def read() -> None:
        nonlocal most
        async with sqlite_store._raw_read() as conn:
            most = max(most, checked_out(engine))
            await asyncio.sleep(0.05)  # the others take theirs meanwhile
            assert (await conn.execute(text("SELECT count(*) FROM jobs"))).scalar_one() == 1

    await asyncio.gather(*(read() for _ in range(3 * SQLITE_READERS_MAX)))
    assert most == SQLITE_READERS_MAX  # the rest waited for a held one
    assert checked_out(engine) == SQLITE_READERS_KEPT  # the others closed


async def test_a_transaction_left_open_is_rolled_back(store: Store, backend: str) -> None:
    async with store._raw_write() as conn:  # SQLAlchemy begins one on a statement
        await conn.execute(text("SELECT 1"))
        assert conn.in_transaction()
    async with store._raw_write() as conn:
        assert not conn.in_transaction()
        driver = await driver_connection(conn)
        if backend == "sqlite":  # on the driver's own connection
            await driver._execute(driver._conn.execute, "BEGIN IMMEDIATE")
        else:
            await driver.execute("BEGIN")
    async with store._raw_write() as conn:
        assert await driver_connection(conn) is driver
        if backend == "sqlite":
            assert not driver._conn.in_transaction
        else:
            assert not driver.is_in_transaction()
    [(job, existed)] = await store.insert_jobs([new_job()])
    assert not existed and await store.get_job(job.id) is not None


async def test_a_begin_cancelled_midway_leaves_no_transaction_behind(
    store: Store, backend: str
) -> None:
    """PostgreSQL: asyncpg counts a transaction whose BEGIN was cancelled (a call's deadline)
    as its connection's current one; the release ends it, so the next transactions, ours
    and SQLAlchemy's, start afresh rather than as SAVEPOINTs outside any transaction."""
    if backend == "sqlite":
        pytest.skip("asyncpg's transactions")
    async with store._raw_write() as conn:
        driver = await driver_connection(conn)
        begin = asyncio.create_task(driver.transaction().start())
        await asyncio.sleep(0)  # sent, its reply awaited
        begin.cancel()
        with pytest.raises(asyncio.CancelledError):
            await begin
    [job] = await store.insert_new_jobs_in_chunks(iter([[new_job()]]))  # asyncpg's transaction
    async with store._write() as conn:  # SQLAlchemy's
        count = text("SELECT count(*) FROM jobs")
        assert (await conn.execute(count)).scalar_one() == 1
    async with store._raw_write() as conn:
        assert await driver_connection(conn) is driver
        assert not driver.is_in_transaction()
    assert await store.get_job(job.id) is not None


async def test_a_write_cancelled_while_its_begin_waits_hands_the_writer_on_clean(
    sqlite_store: Store, tmp_path: Path
) -> None:
    """SQLite: a transaction cancelled while its BEGIN IMMEDIATE still waits in the driver's
    thread (another connection holds the write lock) hands the writer on only once that
    BEGIN has run and been rolled back: the next write does not meet it ("cannot start a
    transaction within a transaction")."""

    async def write() -> None:
        async with sqlite_store._write() as conn:
            await conn.execute(text("SELECT 1"))

    outside = sqlite3.connect(tmp_path / "sqlite.db", isolation_level=None)
    try:
        outside.execute("BEGIN IMMEDIATE")
        cancelled = asyncio.create_task(write())
        await asyncio.sleep(0.2)  # its BEGIN waits for the lock in the driver's thread
        cancelled.cancel()
        after = asyncio.create_task(sqlite_store.insert_jobs([new_job()]))
        await asyncio.sleep(0.2)
    finally:
        outside.execute("ROLLBACK")
        outside.close()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    [(job, _)] = await after
    assert await sqlite_store.get_job(job.id) is not None


async def test_a_read_left_open_does_not_hold_its_snapshot(sqlite_store: Store) -> None:
    async with sqlite_store._raw_read() as conn:
        driver = await driver_connection(conn)
        await driver._execute(driver._conn.execute, "BEGIN")
        await driver._execute(driver._conn.execute, "SELECT count(*) FROM jobs")
    [(job, _)] = await sqlite_store.insert_jobs([new_job()])
    async with sqlite_store._raw_read() as conn:  # the same reader, on top of the free list
        assert await driver_connection(conn) is driver
        assert not driver._conn.in_transaction
    assert await sqlite_store.get_job(job.id) is not None  # a snapshot after the insert


async def test_a_snapshots_isolation_level_does_not_outlive_it(store: Store, backend: str) -> None:
    [(job, _)] = await store.insert_jobs([new_job()])
    async with store.snapshot(JobFilter()) as (_head, chunks):
        assert [j.id async for chunk in chunks for j in chunk] == [job.id]
    for _ in range(3):  # whichever connection each takes
        async with store._write() as conn:
            assert "isolation_level" not in conn.sync_connection.get_execution_options()  # type: ignore[union-attr]
            if backend == "postgres":
                level = (await conn.execute(text("SHOW transaction_isolation"))).scalar_one()
                assert level == "read committed"


async def test_an_invalidated_connection_is_replaced(store: Store) -> None:
    async with store._raw_write() as conn:
        before = await driver_connection(conn)
        await conn.invalidate()
    [(job, _)] = await store.insert_jobs([new_job()])
    async with store._raw_write() as conn:
        assert await driver_connection(conn) is not before
    assert await store.get_job(job.id) is not None
    assert checked_out(store.write_engine) == 1


async def test_a_lost_connection_is_not_handed_out_again(store: Store, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("PostgreSQL's backends")
    [(job, _)] = await store.insert_jobs([new_job()])
    async with store._raw_read() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    async with store.read_engine.connect() as other:  # the server ends the held one's backend
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    for _ in range(100):  # the driver reads of its end while the connection is idle
        if (await driver_connection(conn)).is_closed():
            break
        await asyncio.sleep(0.01)
    else:  # not yet: the call that meets it answers UNAVAILABLE and gives it up
        with pytest.raises(DatabaseUnavailable):
            await store.get_job(job.id)
    found = await store.get_job(job.id)  # not on the held one, whose backend is gone
    assert found is not None and found.id == job.id
    async with store._raw_read() as conn:
        assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid


async def test_a_release_cancelled_midway_still_gives_the_connection_back(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release's rollback of a transaction left open is slowed (a gate before the real
    one), and its caller cancelled meanwhile: the rollback still runs, and the connection,
    holding SQLite's write lock until then, goes back to the store."""
    entered, gate = asyncio.Event(), asyncio.Event()
    dialect_type = type(SQLITE)
    real = dialect_type.end_driver_transaction

    async def slowed(self: Any, driver: Any) -> None:
        entered.set()
        await gate.wait()
        await real(self, driver)

    monkeypatch.setattr(dialect_type, "end_driver_transaction", slowed)

    async def leave_open() -> None:
        async with sqlite_store._raw_write() as conn:
            driver = await driver_connection(conn)
            await driver._execute(driver._conn.execute, "BEGIN IMMEDIATE")

    task = asyncio.create_task(leave_open())
    await entered.wait()
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    writer = sqlite_store._writer
    assert writer is not None and len(writer._idle) == 1  # back, not left to the collector
    async with sqlite_store._raw_write() as conn:
        assert not (await driver_connection(conn))._conn.in_transaction
    [(job, _)] = await asyncio.wait_for(sqlite_store.insert_jobs([new_job()]), 5)
    assert await sqlite_store.get_job(job.id) is not None


async def test_users_take_turns_and_a_long_wait_times_out(sqlite_store: Store) -> None:
    writer = HeldConnections(sqlite_store.write_engine, SQLITE, size=1, keep=1, wait_s=0.2)
    order: list[str] = []
    try:
        async with writer.connect():
            second = asyncio.create_task(_use(writer, order, "second"))
            await asyncio.sleep(0.05)
            order.append("first")
        await second
        assert order == ["first", "second"]
        async with writer.connect():
            with pytest.raises(sa_exc.TimeoutError, match=r"0\.2 s"):
                await _use(writer, order, "never")
        assert order == ["first", "second"]
        async with writer.connect() as conn:  # the slot was given back after the timeout
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
    finally:
        await writer.close()


async def _use(held: HeldConnections, order: list[str], name: str) -> None:
    async with held.connect():
        order.append(name)


async def test_close_gives_the_connections_back(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'c.db'}")
    await store.insert_jobs([new_job()])
    async with store._raw_write() as writing, store._raw_read() as idle:
        pass
    assert not writing.closed and not idle.closed  # held between uses
    async with store._raw_read() as reading:  # in use while the store closes
        assert reading is idle
        async with store._raw_read() as other:
            pass
        await store.close()
        assert writing.closed and other.closed
        assert not reading.closed
    assert reading.closed  # back at its release
