"""One replica leads maintenance; when it goes, another takes over."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobwheel.server.storage import open_store
from jobwheel.server.storage.leadership import Leadership

from tests.conftest import fresh_pg_schema


@pytest.mark.postgres
async def test_exactly_one_replica_leads_and_another_takes_over() -> None:
    async with fresh_pg_schema() as url:
        stores = [await open_store(url) for _ in range(3)]
        try:
            replicas = [Leadership(s) for s in stores]
            assert [await r.check() for r in replicas].count(True) == 1
            assert [await r.check() for r in replicas].count(True) == 1  # it stays
            leader = next(r for r in replicas if r.leading)
            await leader.release()
            others = [r for r in replicas if r is not leader]
            assert [await r.check() for r in others].count(True) == 1
        finally:
            for r in replicas:
                await r.release()
            for s in stores:
                await s.close()


async def test_sqlite_always_leads(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        assert await Leadership(store).check()
    finally:
        await store.close()
