"""PostgreSQL: a process appending events wakes the others' listeners (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from jobwheel.server.storage import open_store

from tests.conftest import fresh_pg_schema
from tests.integration.storage.factories import new_job


@pytest.mark.postgres
async def test_appending_events_notifies_listeners() -> None:
    async with fresh_pg_schema() as url:
        listener, writer = await open_store(url), await open_store(url)
        try:
            woken = asyncio.Event()
            async with listener.listening(woken.set) as listening:
                assert listening
                await writer.insert_jobs([new_job()])
                await asyncio.wait_for(woken.wait(), 5)
        finally:
            await listener.close()
            await writer.close()


async def test_sqlite_has_no_listener(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path}/j.db")
    try:
        async with store.listening(lambda: None) as listening:
            assert not listening
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_listener_of_others_only_is_not_woken_by_its_own_store() -> None:
    async with fresh_pg_schema() as url:
        listener, writer = await open_store(url), await open_store(url)
        try:
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
        finally:
            await listener.close()
            await writer.close()
