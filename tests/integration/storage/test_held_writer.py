"""storage/held_writer.py: a SQLite file store holds its one write connection from write to
write, cleans up after each as the pool's check-in did, and replaces a broken one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.driver import driver_connection
from jobwheel.server.storage.held_writer import HeldWriter
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc

from tests.integration.storage.factories import new_job


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        yield s
    finally:
        await s.close()


async def test_writes_check_the_connection_out_once(sqlite_store: Store) -> None:
    checkouts: list[Any] = []
    pool_events = sqlite_store.write_engine.sync_engine.pool
    event.listen(pool_events, "checkout", lambda *args: checkouts.append(args))
    for i in range(5):
        await sqlite_store.insert_jobs([new_job(task=f"t{i}")])
    assert len(checkouts) == 1  # at the first write; the pool's way: one per write


async def test_a_transaction_left_open_is_rolled_back(sqlite_store: Store) -> None:
    async with sqlite_store._raw_write() as conn:  # SQLAlchemy begins one on a statement
        await conn.execute(text("SELECT 1"))
        assert conn.in_transaction()
    async with sqlite_store._raw_write() as conn:
        assert not conn.in_transaction()
        driver = await driver_connection(conn)
        await driver._execute(driver._conn.execute, "BEGIN IMMEDIATE")  # the driver's own
    async with sqlite_store._raw_write() as conn:
        driver = await driver_connection(conn)
        assert not driver._conn.in_transaction
    [(job, existed)] = await sqlite_store.insert_jobs([new_job()])
    assert not existed and await sqlite_store.get_job(job.id) is not None


async def test_an_invalidated_connection_is_replaced(sqlite_store: Store) -> None:
    async with sqlite_store._raw_write() as conn:
        before = await driver_connection(conn)
        await conn.invalidate()
    [(job, _)] = await sqlite_store.insert_jobs([new_job()])
    async with sqlite_store._raw_write() as conn:
        assert await driver_connection(conn) is not before
    assert await sqlite_store.get_job(job.id) is not None


async def test_writers_take_turns_and_a_long_wait_times_out(sqlite_store: Store) -> None:
    writer = HeldWriter(sqlite_store.write_engine, wait_s=0.2)
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
        async with writer.connect() as conn:  # the lock was given back after the timeout
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
    finally:
        await writer.close()


async def _use(writer: HeldWriter, order: list[str], name: str) -> None:
    async with writer.connect():
        order.append(name)


async def test_close_gives_the_connection_back(sqlite_store: Store) -> None:
    await sqlite_store.insert_jobs([new_job()])
    pool = sqlite_store.write_engine.sync_engine.pool
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    await sqlite_store._writer.close()  # type: ignore[union-attr]
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    await sqlite_store.insert_jobs([new_job()])  # a later write takes it again
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
