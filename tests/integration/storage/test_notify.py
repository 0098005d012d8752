"""PostgreSQL: a process appending events wakes the others' listeners (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from jobwheel.server.events import EventBus, LogTailer
from jobwheel.server.model import SECOND
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.dialect import NOTIFY_CHANNEL_SQL
from sqlalchemy import text

from tests.conftest import fresh_pg_schema
from tests.integration.api.waiting import eventually
from tests.integration.storage.factories import new_job


@asynccontextmanager
async def pg_stores(n: int) -> AsyncIterator[list[Store]]:
    """`n` stores open on one fresh PostgreSQL schema, closed afterwards."""
    async with fresh_pg_schema() as url:
        stores = [await open_store(url) for _ in range(n)]
        try:
            yield stores
        finally:
            for store in stores:
                await store.close()


@pytest.mark.postgres
async def test_appending_events_notifies_listeners() -> None:
    async with pg_stores(2) as (listener, writer):
        woken = asyncio.Event()
        async with listener.listening(woken.set) as listening:
            assert listening
            await writer.insert_jobs([new_job()])
            await asyncio.wait_for(woken.wait(), 5)


async def test_sqlite_has_no_listener(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/j.db")
    try:
        async with store.listening(lambda: None) as listening:
            assert not listening
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_listener_of_others_only_is_not_woken_by_its_own_store() -> None:
    async with pg_stores(2) as (listener, writer):
        woken: list[int] = []
        others = asyncio.Event()

        def wake() -> None:
            woken.append(1)
            others.set()

        async with listener.listening(wake, others_only=True) as listening:
            assert listening
            await listener.insert_jobs([new_job()])
            await writer.insert_jobs([new_job()])
            # one connection gets notifications in commit order: the writer's came last
            await asyncio.wait_for(others.wait(), 5)
            assert len(woken) == 1


@pytest.mark.postgres
async def test_deployments_in_other_schemas_do_not_wake_each_other() -> None:
    async with fresh_pg_schema() as ours, fresh_pg_schema() as theirs:
        listener, writer = await open_store(ours), await open_store(ours)
        neighbour = await open_store(theirs)
        try:
            woken: list[int] = []
            ours_woken = asyncio.Event()

            def wake() -> None:
                woken.append(1)
                ours_woken.set()

            async with listener.listening(wake, on_settings=lambda: woken.append(2)) as listening:
                assert listening
                await neighbour.insert_jobs([new_job()])
                await neighbour.update_queue("q", paused=True)
                await writer.insert_jobs([new_job()])
                # one connection gets notifications in commit order: ours came last
                await asyncio.wait_for(ours_woken.wait(), 5)
                assert woken == [1]
        finally:
            for store in (listener, writer, neighbour):
                await store.close()


@pytest.mark.postgres
async def test_the_channel_is_named_by_the_schema() -> None:
    async with pg_stores(1) as [store], store.read_engine.connect() as conn:
        schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
        channel = (await conn.execute(text(f"SELECT {NOTIFY_CHANNEL_SQL}"))).scalar_one()
        assert channel == f"jobwheel_events.{schema}"
        # up to 47 bytes the name fits in PostgreSQL's 63; past them, its md5
        for name, expected in [
            ("é" * 23 + "s", "jobwheel_events." + "é" * 23 + "s"),
            ("é" * 24, "jobwheel_events." + hashlib.md5(("é" * 24).encode()).hexdigest()),
            ("s" * 63, "jobwheel_events." + hashlib.md5(b"s" * 63).hexdigest()),
        ]:
            await conn.execute(text(f'CREATE SCHEMA "{name}"'))
            await conn.execute(text(f'SET LOCAL search_path = "{name}"'))
            got = (await conn.execute(text(f"SELECT {NOTIFY_CHANNEL_SQL}"))).scalar_one()
            assert got == expected
            assert len(got.encode()) <= 63
        await conn.execute(text("SET LOCAL search_path = public"))
        public = (await conn.execute(text(f"SELECT {NOTIFY_CHANNEL_SQL}"))).scalar_one()
        assert public == "jobwheel_events"
        await conn.rollback()


@pytest.mark.postgres
async def test_the_log_follower_reads_at_once_only_what_other_replicas_tell_of() -> None:
    # this store hands nothing to the bus (no event sink): its commits stand for a writer
    # between its commit and its hand-over, which the follower must not read back at once
    async with pg_stores(2) as (ours, theirs):
        bus = EventBus()
        tailer = LogTailer(ours, bus, always=True, check_every=SECOND // 2)
        reads: list[int] = []
        read_events_kept = ours.read_events_kept

        async def counted(after: int, limit: int, keep: Any) -> Any:
            reads.append(after)
            return await read_events_kept(after, limit, keep)

        ours.read_events_kept = counted  # type: ignore[method-assign]
        following = asyncio.create_task(tailer.run())
        try:
            await asyncio.sleep(0.6)
            first = len(reads)  # the read on starting to listen
            await ours.insert_jobs([new_job()])
            await asyncio.sleep(0.1)  # a check now only notes the log's head
            assert bus.head == 0 and len(reads) == first
            # repaired by a check once the log's head stayed ahead of the bus for one
            await eventually(lambda: bus.head == 1, "the repair", within=5)
            repaired = len(reads)
            await asyncio.sleep(1.1)  # idle slow polls read nothing
            assert len(reads) == repaired
            await theirs.insert_jobs([new_job()])  # told: read
            await eventually(lambda: bus.head == 2, "the other replica's event", within=5)
        finally:
            following.cancel()


@pytest.mark.postgres
async def test_earlier_versions_notifications_are_heard_in_any_schema() -> None:
    # they tell of their appends on "jobwheel_events" whatever the schema (a rolling upgrade)
    async with pg_stores(1) as [store]:
        woken, told = asyncio.Event(), asyncio.Event()
        async with store.listening(woken.set, on_settings=told.set) as listening:
            assert listening
            async with store.write_engine.begin() as conn:
                await conn.execute(text("SELECT pg_notify('jobwheel_events', '7 oldtoken')"))
                await conn.execute(text("SELECT pg_notify('jobwheel_events', 'settings')"))
            await asyncio.wait_for(woken.wait(), 5)
            await asyncio.wait_for(told.wait(), 5)


@pytest.mark.postgres
async def test_a_closed_listening_connection_is_told_and_not_pooled() -> None:
    async with pg_stores(1) as [store]:
        lost = asyncio.Event()
        async with store.listening(lambda: None, on_lost=lost.set) as listening:
            assert listening
            async with store.write_engine.connect() as conn:
                # its last statement listened on this schema's channel
                killed = await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE query = 'LISTEN \"jobwheel_events.' || current_schema()"
                        " || '\"'"
                    )
                )
                assert killed.scalars().all() == [True]
            await asyncio.wait_for(lost.wait(), 5)
        # the store's reads go on, on connections that are open
        for _ in range(6):
            assert await store.head_revision() == 0
