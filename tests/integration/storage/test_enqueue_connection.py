"""PostgreSQL: enqueues run on a connection of their own whose prepared statements keep one
generic plan (dialect.PG_ENQUEUE_SETTINGS); every other connection keeps the default, under
which a statement is planned for the values it is given."""

from __future__ import annotations

import asyncio

import pytest
from jobwheel.server.storage import Store
from jobwheel.server.storage.driver import driver_connection
from jobwheel.server.storage.outage import DatabaseUnavailable
from sqlalchemy import text

from tests.integration.storage.factories import new_job

pytestmark = pytest.mark.postgres

# PostgreSQL's default plans a prepared statement for its values five times, then keeps
# doing so while the generic plan looks costlier (an enqueue of a few jobs always)
PAST_THE_FIRST_PLANS = 8

# the job inserts asyncpg prepared on a connection (not this look-up, whose text names them)
_INSERTS = """
FROM pg_prepared_statements
WHERE statement LIKE '%INSERT INTO jobs%' AND statement NOT LIKE '%pg_prepared_statements%'
"""
_PLANS = f"SELECT coalesce(sum(custom_plans), 0), coalesce(sum(generic_plans), 0) {_INSERTS}"


@pytest.fixture
def pg_store(store: Store, backend: str) -> Store:
    if backend != "postgres":
        pytest.skip("PostgreSQL's enqueue connection")
    return store


async def _enqueue_plans(store: Store) -> tuple[int, int]:
    """(custom, generic) executions of job inserts on the enqueues' connection."""
    async with store._enqueue_write(begun=False) as conn:
        custom, generic = await (await driver_connection(conn)).fetchrow(_PLANS)
    return int(custom), int(generic)


async def test_a_single_job_enqueue_is_not_planned_again_each_time(pg_store: Store) -> None:
    before = await _enqueue_plans(pg_store)  # the start-up's rehearsal
    for _ in range(PAST_THE_FIRST_PLANS):
        await pg_store.insert_jobs([new_job()])
    assert await _enqueue_plans(pg_store) == (0, before[1] + PAST_THE_FIRST_PLANS)


async def test_keyed_and_unlike_jobs_are_enqueued_on_generic_plans(pg_store: Store) -> None:
    for i in range(PAST_THE_FIRST_PLANS):
        # a key, and two jobs of different tasks, take the general way in (not pg_enqueue)
        await pg_store.insert_jobs([new_job(idempotency_key=f"k{i}"), new_job(task="other")])
    custom, generic = await _enqueue_plans(pg_store)
    assert custom == 0 and generic >= PAST_THE_FIRST_PLANS


async def test_concurrent_enqueues_take_turns_on_their_connection(pg_store: Store) -> None:
    batches = await asyncio.gather(
        *(pg_store.insert_jobs([new_job() for _ in range(n)]) for n in range(1, 9))
    )
    assert [len(b) for b in batches] == list(range(1, 9))
    seqs = sorted(job.seq for batch in batches for job, _ in batch)
    assert len(set(seqs)) == len(seqs) == sum(range(1, 9))


async def test_other_statements_keep_plans_for_their_values(pg_store: Store) -> None:
    await pg_store.insert_jobs([new_job()])
    async with pg_store.read_engine.connect() as conn:
        assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == "auto"
    async with pg_store._enqueue_write() as conn:
        mode = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
    assert mode == "force_generic_plan"


async def test_a_new_store_has_its_enqueue_statements_prepared(pg_store: Store) -> None:
    # both shapes of the one-statement enqueue (times shared, or each job's own), before any
    # enqueue: the first one after a start meets a warm connection
    async with pg_store._enqueue_write(begun=False) as conn:
        prepared = await (await driver_connection(conn)).fetchval(f"SELECT count(*) {_INSERTS}")
    assert prepared == 2


async def test_a_lost_enqueue_connection_is_replaced(pg_store: Store) -> None:
    async with pg_store._enqueue_write(begun=False) as conn:
        driver = await driver_connection(conn)
        pid = await driver.fetchval("SELECT pg_backend_pid()")
    async with pg_store.read_engine.connect() as other:  # the server ends its backend
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    for _ in range(100):  # the driver reads of its end while the connection is idle
        if driver.is_closed():
            break
        await asyncio.sleep(0.01)
    else:  # not yet: the enqueue that meets it answers UNAVAILABLE and gives it up
        with pytest.raises(DatabaseUnavailable):
            await pg_store.insert_jobs([new_job()])
    [(job, existed)] = await pg_store.insert_jobs([new_job()])
    assert not existed and (await pg_store.get_job(job.id)) is not None
    async with pg_store._enqueue_write(begun=False) as conn:
        assert await (await driver_connection(conn)).fetchval("SELECT pg_backend_pid()") != pid
