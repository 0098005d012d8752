"""Event subscriptions."""

from __future__ import annotations

import json

from jobwheel.server.model import EventSubscription, EventType
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.dialect import notify_settings_changed
from jobwheel.server.storage.schema import event_head
from jobwheel.server.storage.schema import event_subscriptions as subs
from sqlalchemy import delete, func, select, text, update


class Subscriptions(StoreBase):
    async def add_subscription(self, sub: EventSubscription, limit: int) -> bool:
        """Stores `sub` unless `limit` subscriptions exist already (False then)."""
        async with self._write() as conn:
            if self.dialect.name == "postgresql":
                # creates on several connections (replicas) count one after another: counted
                # side by side, they passed the limit together (SQLite has one writer)
                await conn.execute(text(f"LOCK TABLE {subs.name} IN SHARE ROW EXCLUSIVE MODE"))
            count = (await conn.execute(select(func.count()).select_from(subs))).scalar_one()
            if count >= limit:
                return False
            await conn.execute(
                subs.insert().values(
                    id=sub.id,
                    url=sub.url,
                    event_types=json.dumps(sorted(t.value for t in sub.event_types)),
                    secret=sub.secret,
                    create_time=sub.create_time,
                    from_revision=select(event_head.c.revision)
                    .where(event_head.c.id == 1)
                    .scalar_subquery(),
                )
            )
            await notify_settings_changed(conn)
        return True

    async def subscriptions(self) -> list[EventSubscription]:
        async with self._read() as conn:
            rows = await conn.execute(select(subs).order_by(subs.c.create_time, subs.c.id))
            return [
                EventSubscription(
                    id=r.id,
                    url=r.url,
                    event_types=frozenset(EventType(t) for t in json.loads(r.event_types)),
                    secret=r.secret,
                    create_time=r.create_time,
                    from_revision=r.from_revision,
                )
                for r in rows
            ]

    async def delete_subscription(self, sub_id: str) -> bool:
        async with self._write() as conn:
            deleted = (await conn.execute(delete(subs).where(subs.c.id == sub_id))).rowcount > 0
            if deleted:
                await notify_settings_changed(conn)
            return deleted

    async def delivery_cursor(self) -> tuple[int, int]:
        """(revision handed to subscriptions so far, newest revision)."""
        async with self._read() as conn:
            rows = dict((await conn.execute(select(event_head.c.id, event_head.c.revision))).all())
        return int(rows[2]), int(rows[1])

    async def advance_delivery_cursor(self, old: int, new: int) -> bool:
        """Compare-and-set: False when another process moved it first."""
        stmt = (
            update(event_head)
            .where(event_head.c.id == 2, event_head.c.revision == old)
            .values(revision=new)
        )
        async with self._write() as conn:
            return (await conn.execute(stmt)).rowcount == 1
