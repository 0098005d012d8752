"""One replica leads maintenance; when it goes, another takes over."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobwheel.server.storage import open_store
from jobwheel.server.storage.leadership import Leadership, leader_lock_key

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


@pytest.mark.postgres
async def test_deployments_in_different_schemas_lead_independently() -> None:
    async with fresh_pg_schema() as one, fresh_pg_schema() as two:
        stores = [await open_store(url) for url in (one, one, two, two)]
        replicas = [Leadership(s) for s in stores]
        try:
            leading = [await r.check() for r in replicas]
            # one leader per schema, both at once: neither waits for the other's lock
            assert leading[:2].count(True) == 1 and leading[2:].count(True) == 1
        finally:
            for r in replicas:
                await r.release()
            for s in stores:
                await s.close()


def test_the_lock_key_depends_on_the_schema_only() -> None:
    assert leader_lock_key("public") == leader_lock_key("public")
    assert leader_lock_key("public") != leader_lock_key("jobs")
    assert all(-(2**63) <= leader_lock_key(s) < 2**63 for s in ("", "public", "x" * 63))
