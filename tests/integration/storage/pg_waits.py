"""PostgreSQL: waiting until backends wait for a lock, for tests that race a writer on purpose."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


async def waiting_on_locks(conn: AsyncConnection, n: int) -> None:
    """Returns once `n` backends of this database wait for a lock (10 s at most), asking on
    `conn`."""
    for _ in range(2000):
        waiting = (await conn.execute(_WAITING)).scalar_one()
        await conn.rollback()  # a transaction reads one snapshot of the statistics
        if waiting >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{n} lock waits never showed")
