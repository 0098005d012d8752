"""PostgreSQL: opening a store warms its first connections (storage.pg_cycle.warm_up): their
backends have prepared the fire's and the dispatch cycle's statements, and nothing changed."""

from __future__ import annotations

import pytest
from jobwheel.server.model import JobState
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.pg_cycle import WARM_CONNECTIONS
from sqlalchemy import text

from tests.conftest import fresh_pg_schema
from tests.integration.storage.factories import new_job

# a phrase of each statement warm_up runs, as pg_prepared_statements shows its text
_WARMED = (
    "UPDATE jobs SET state = 'queued'",  # the fire's promotion
    "AND recurring",  # the misfire catch-up's look-up
    "WITH picked AS",  # the in-process claim
    "WITH v AS",  # the settlement
    "UPDATE event_head",  # the event append
)


async def _revision(store: Store) -> int:
    async with store.read_engine.connect() as conn:
        return int(
            (await conn.execute(text("SELECT revision FROM event_head WHERE id = 1"))).one()[0]
        )


@pytest.mark.postgres
async def test_opening_warms_connections_and_changes_nothing() -> None:
    async with fresh_pg_schema() as url:
        first = await open_store(url)
        try:
            # long due: a real fire would promote it
            [(due, _)] = await first.insert_jobs(
                [new_job(state=JobState.SCHEDULED, next_run_time=1)]
            )
            before = await _revision(first)
        finally:
            await first.close()

        store = await open_store(url)
        try:
            pool = store.write_engine.sync_engine.pool
            assert pool.checkedin() >= WARM_CONNECTIONS  # type: ignore[attr-defined]
            async with store.write_engine.connect() as conn:
                prepared = (
                    (await conn.execute(text("SELECT statement FROM pg_prepared_statements")))
                    .scalars()
                    .all()
                )
            for phrase in _WARMED:
                assert any(phrase in statement for statement in prepared), phrase
            assert await _revision(store) == before
            job = await store.get_job(due.id)
            assert job is not None
            assert job.state is JobState.SCHEDULED
            assert job.update_time == due.update_time
        finally:
            await store.close()
