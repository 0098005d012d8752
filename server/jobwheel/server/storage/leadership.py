"""Which replica runs maintenance (lost-attempt recovery, pruning): the one holding a
PostgreSQL session advisory lock, on a connection kept for it. If that replica dies its
connection closes, the lock is released and another replica takes over at its next try.
The lock's key is derived from the schema the store uses (current_schema()), so deployments
in different schemas of one database lead independently. With SQLite there is one process:
it always leads."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any

from jobwheel.server.storage.outage import is_unreachable, reason
from jobwheel.server.storage.store import Store
from sqlalchemy import func, select

log = logging.getLogger(__name__)


def leader_lock_key(schema: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of the leader of `schema`."""
    digest = hashlib.blake2b(f"jobwheel leader {schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Leadership:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Any = None
        self._key: int | None = None
        self.leading = not store.dialect.advisory_locks

    async def check(self) -> bool:
        """Takes the lead if nobody holds it; True while this process leads."""
        if not self.store.dialect.advisory_locks:
            return True
        try:
            if self._conn is None:
                self._conn = await self.store.read_engine.connect()
            if self._key is None:
                schema = (await self._conn.execute(select(func.current_schema()))).scalar()
                self._key = leader_lock_key(str(schema))
            if not self.leading:
                lock = select(func.pg_try_advisory_lock(self._key))
                self.leading = bool((await self._conn.execute(lock)).scalar())
                await self._conn.commit()  # the lock is the session's, not the transaction's
                if self.leading:
                    log.info("this replica now runs maintenance")
            else:
                await self._conn.execute(select(1))  # still connected, so still holding it
                await self._conn.commit()
        except Exception as exc:
            if is_unreachable(exc):
                log.warning("leadership check failed (%s); not leading until it works", reason(exc))
            else:
                log.exception("leadership check failed; not leading until it works again")
            await self.release()
        return self.leading

    async def release(self) -> None:
        self.leading = not self.store.dialect.advisory_locks
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                # the pool would keep the session (and its lock) alive: end it for real
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
