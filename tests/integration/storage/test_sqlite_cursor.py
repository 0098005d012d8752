"""SQLAlchemy statements on SQLite through the one-hop cursor (storage/sqlite_cursor.py): one
call to the driver's thread each, with what SQLAlchemy reads of a cursor (rows, rowcount,
lastrowid, errors) as its own cursor gives it."""

from __future__ import annotations

from typing import Any

import pytest
from jobwheel.server.storage import Store
from jobwheel.server.storage.sqlite_cursor import OneHopConnection
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@pytest.fixture
async def sqlite_store(sqlite_store: Store) -> Store:
    """conftest's SQLite store, with a table `t` for the statements below."""
    async with sqlite_store.write_engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT UNIQUE)"))
    return sqlite_store


async def _hops(conn: AsyncConnection) -> list[Any]:
    """Records each call `conn`'s driver hands to its thread from now on."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    calls: list[Any] = []
    execute = driver._execute

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await execute(fn, *args, **kwargs)

    driver._execute = counted  # type: ignore[method-assign]
    return calls


async def test_every_connection_of_both_engines_uses_it(sqlite_store: Store) -> None:
    for engine in (sqlite_store.write_engine, sqlite_store.read_engine):
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert isinstance(raw.dbapi_connection, OneHopConnection)


async def test_a_statement_is_one_hop(sqlite_store: Store) -> None:
    async with sqlite_store.write_engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # the transaction's BEGIN, before counting
        hops = await _hops(conn)
        rows = (await conn.execute(text("SELECT k FROM t"))).all()
        await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
        await conn.rollback()
    assert rows == []
    assert len(hops) == 3  # two statements, and the rollback


async def test_rows_rowcount_and_lastrowid_as_sqlalchemy_reads_them(sqlite_store: Store) -> None:
    async with sqlite_store.write_engine.begin() as conn:
        first = await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
        second = await conn.execute(text("INSERT INTO t (v) VALUES ('b')"))
        assert (first.lastrowid, second.lastrowid) == (1, 2)
        many = await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "c"}, {"v": "d"}])
        assert many.rowcount == 2
        changed = await conn.execute(text("UPDATE t SET v = v || '!' WHERE k > 1"))
        assert changed.rowcount == 3
        returned = await conn.execute(text("DELETE FROM t WHERE k >= 3 RETURNING k"))
        assert sorted(returned.scalars()) == [3, 4]
        found = await conn.execute(text("SELECT k, v FROM t ORDER BY k"))
        assert list(found.keys()) == ["k", "v"]
        assert [tuple(r) for r in found] == [(1, "a"), (2, "b!")]
        assert (await conn.execute(text("SELECT v FROM t WHERE k = 9"))).first() is None


async def test_a_failing_statement_raises_sqlalchemys_error_and_the_connection_goes_on(
    sqlite_store: Store,
) -> None:
    async with sqlite_store.write_engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
    with pytest.raises(sa_exc.IntegrityError):
        async with sqlite_store.write_engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (v) VALUES ('a')"))
    with pytest.raises(sa_exc.OperationalError, match="no such table"):
        async with sqlite_store.read_engine.connect() as conn:
            await conn.execute(text("SELECT * FROM missing"))
    async with sqlite_store.write_engine.begin() as conn:  # the pool's only writer, still fine
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
