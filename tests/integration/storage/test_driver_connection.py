"""storage/driver.py: the driver's connection under an AsyncConnection, read without a
greenlet while the pooled connection is at hand, through SQLAlchemy when it must be
re-established."""

from __future__ import annotations

from jobwheel.server.storage import Store
from jobwheel.server.storage.driver import driver_connection
from sqlalchemy import text


async def test_it_is_the_pooled_connections_driver(store: Store) -> None:
    for engine in (store.write_engine, store.read_engine):
        async with engine.connect() as conn:
            expected = (await conn.get_raw_connection()).driver_connection
            assert await driver_connection(conn) is expected


async def test_an_invalidated_connection_is_re_established(store: Store) -> None:
    async with store.read_engine.connect() as conn:
        before = await driver_connection(conn)
        await conn.invalidate()
        assert conn.invalidated
        after = await driver_connection(conn)
        assert after is not before
        assert after is (await conn.get_raw_connection()).driver_connection
        assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
