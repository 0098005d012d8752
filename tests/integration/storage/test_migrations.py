"""Schema versioning: fresh stamp, upgrade, no-op reopen, refusal of a newer schema."""

from __future__ import annotations

import asyncio

import pytest
from jobwheel.server.storage import (
    MIGRATIONS,
    Dialect,
    Migration,
    SchemaVersionError,
    Store,
    open_store,
)
from jobwheel.server.storage.migrations import latest_version
from jobwheel.server.storage.schema import schema_version
from jobwheel.server.storage.workers import WorkerRow
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.integration.storage.factories import T0, new_job


async def stamped(store: Store) -> list[int]:
    async with store.read_engine.connect() as conn:
        return list((await conn.execute(select(schema_version.c.version))).scalars())


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


async def columns(store: Store, table: str) -> set[str]:
    async with store.read_engine.connect() as conn:
        return await conn.run_sync(_columns, table)


async def _add_note_column(conn: AsyncConnection, _dialect: Dialect) -> None:
    await conn.execute(text("ALTER TABLE jobs ADD COLUMN note TEXT NOT NULL DEFAULT 'none'"))


# A step only this test knows, after the real ones.
WITH_NOTE = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "add jobs.note", _add_note_column))


async def test_fresh_database_is_stamped_with_the_latest_version(store: Store) -> None:
    assert await stamped(store) == [latest_version()]
    assert {"jobs", "attempts", "schema_version"} <= set(await tables(store))


async def tables(store: Store) -> list[str]:
    async with store.read_engine.connect() as conn:
        return await conn.run_sync(lambda c: inspect(c).get_table_names())


async def test_older_database_is_upgraded_and_keeps_its_rows(store_url: str) -> None:
    old = await open_store(store_url)
    [(job, _)] = await old.insert_jobs([new_job()])
    await old.close()

    upgraded = await open_store(store_url, migrations=WITH_NOTE)
    try:
        assert await stamped(upgraded) == [len(WITH_NOTE)]
        assert "note" in await columns(upgraded, "jobs")
        assert await upgraded.get_job(job.id) == job
        async with upgraded.read_engine.connect() as conn:
            note = await conn.execute(text("SELECT note FROM jobs"))
            assert note.scalar_one() == "none"
        # the store still writes with the extra column in place
        [(later, existed)] = await upgraded.insert_jobs([new_job()])
        assert not existed and await upgraded.get_job(later.id) == later
    finally:
        await upgraded.close()

    # reopening an up-to-date database runs nothing (the step would fail if run twice)
    again = await open_store(store_url, migrations=WITH_NOTE)
    try:
        assert await stamped(again) == [len(WITH_NOTE)]
    finally:
        await again.close()


async def test_failed_step_leaves_the_previous_version(store_url: str) -> None:
    await (await open_store(store_url)).close()

    async def broken(conn: AsyncConnection, _dialect: Dialect) -> None:
        await conn.execute(text("CREATE TABLE half_done (x INTEGER)"))
        raise RuntimeError("step failed")

    steps = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", broken))
    with pytest.raises(RuntimeError, match="step failed"):
        await open_store(store_url, migrations=steps)
    store = await open_store(store_url)
    try:
        assert await stamped(store) == [latest_version()]
        assert "half_done" not in await tables(store)  # the DDL rolled back too
    finally:
        await store.close()


async def test_newer_database_is_refused(store_url: str) -> None:
    await (await open_store(store_url, migrations=WITH_NOTE)).close()
    with pytest.raises(SchemaVersionError, match="newer"):
        await open_store(store_url)


async def test_concurrent_first_opens_create_the_schema_once(store_url: str) -> None:
    stores = await asyncio.gather(*(open_store(store_url) for _ in range(4)))
    try:
        assert await stamped(stores[0]) == [latest_version()]
        [(job, _)] = await stores[1].insert_jobs([new_job()])
        assert await stores[3].get_job(job.id) == job
    finally:
        for s in stores:
            await s.close()


def test_migration_list_is_gapless() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


# What each version added, undone newest first: takes a database back to an older shape.
UNDO: dict[int, tuple[str, ...]] = {
    9: (),  # epochs raised: nothing to take back
    8: ("ALTER TABLE jobs DROP COLUMN epoch",),
    7: (
        "DROP INDEX ix_jobs_dispatch",
        "CREATE INDEX ix_jobs_dispatch ON jobs (queue, state, priority DESC, seq)"
        " WHERE state = 'queued'",
    ),
    6: (),  # on PostgreSQL; on SQLite, UNDO_SQLITE
    5: (),  # on SQLite; on PostgreSQL, UNDO_POSTGRES
    4: ("DROP INDEX ix_events_job",),
    3: ("DROP TABLE workers", "ALTER TABLE jobs DROP COLUMN traceparent"),
    2: ("ALTER TABLE jobs DROP COLUMN released_attempts",),
}


# Version 5 changed PostgreSQL's indexes only: back to the whole indexes of version 4.
UNDO_POSTGRES: dict[int, tuple[str, ...]] = {
    5: (
        "DROP INDEX ix_jobs_due",
        "CREATE INDEX ix_jobs_due ON jobs (state, next_run_time)",
        "DROP INDEX ix_jobs_dispatch",
        "CREATE INDEX ix_jobs_dispatch ON jobs (queue, state, priority DESC, seq)",
        "DROP INDEX uq_jobs_idempotency_key",
        "ALTER TABLE jobs ADD CONSTRAINT uq_jobs_idempotency_key UNIQUE (idempotency_key)",
        "ALTER TABLE attempts ADD CONSTRAINT fk_attempts_job_id_jobs FOREIGN KEY (job_id)"
        " REFERENCES jobs (id) ON DELETE CASCADE",
        "DROP INDEX ix_attempts_end_time",
        "CREATE INDEX ix_attempts_end_time ON attempts (end_time)",
    ),
}


# Version 6 made SQLite's indexes partial as well: back to the whole indexes of version 5.
UNDO_SQLITE: dict[int, tuple[str, ...]] = {
    6: (
        "DROP INDEX ix_jobs_due",
        "CREATE INDEX ix_jobs_due ON jobs (state, next_run_time)",
        "DROP INDEX ix_jobs_dispatch",
        "CREATE INDEX ix_jobs_dispatch ON jobs (queue, state, priority DESC, seq)",
        "DROP INDEX uq_jobs_idempotency_key",
        "CREATE UNIQUE INDEX uq_jobs_idempotency_key ON jobs (idempotency_key)",
        "DROP INDEX ix_attempts_end_time",
        "CREATE INDEX ix_attempts_end_time ON attempts (end_time)",
    ),
}


async def back_to(store: Store, version: int) -> None:
    """Turns a current database into one of `version` (its shape and its stamp)."""
    assert set(UNDO) == set(range(2, latest_version() + 1)), "a new migration needs its undo"
    undo = UNDO_POSTGRES if store.dialect.name == "postgresql" else UNDO_SQLITE
    async with store.write_engine.begin() as conn:
        for newer in range(latest_version(), version, -1):
            for statement in undo.get(newer, UNDO[newer]):
                await conn.execute(text(statement))
        await conn.execute(schema_version.update().values(version=version))


def _indexes(conn: Connection, table: str) -> set[str]:
    return {str(i["name"]) for i in inspect(conn).get_indexes(table)}


async def indexes(store: Store, table: str) -> set[str]:
    async with store.read_engine.connect() as conn:
        return await conn.run_sync(_indexes, table)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
async def test_older_databases_gain_what_came_after(store_url: str, version: int) -> None:
    fresh = await open_store(store_url)
    [(job, _)] = await fresh.insert_jobs([new_job()])
    await back_to(fresh, version)
    assert ("traceparent" in await columns(fresh, "jobs")) == (version >= 3)
    assert ("released_attempts" in await columns(fresh, "jobs")) == (version >= 2)
    assert ("ix_events_job" in await indexes(fresh, "events")) == (version >= 4)
    await fresh.close()

    upgraded = await open_store(store_url)
    try:
        assert await stamped(upgraded) == [latest_version()]
        assert {"traceparent", "released_attempts"} <= await columns(upgraded, "jobs")
        assert "workers" in await tables(upgraded)
        assert "ix_events_job" in await indexes(upgraded, "events")
        got = await upgraded.get_job(job.id)
        assert got == job and got.traceparent == "" and got.released_attempts == 0
        # the upgraded schema takes writes to what the migrations added
        await upgraded.record_workers([WorkerRow("w1", "remote", 1, tasks=("t",))])
        assert [w.id for w in await upgraded.list_workers(0)] == ["w1"]
        # the job page's timeline reads the event log by job (the index of version 4)
        assert [e.revision for e in await upgraded.job_timeline(job.id)]
    finally:
        await upgraded.close()


async def test_leases_held_across_the_upgrade_keep_their_epoch(store_url: str) -> None:
    # version 8 adds the epoch (until then the attempt number was the fencing number): a
    # worker holding a lease through the upgrade reports with its attempt number
    fresh = await open_store(store_url)
    (held, _), (waiting, _) = await fresh.insert_jobs([new_job(), new_job()])
    [leased] = await fresh.lease(
        "w1",
        queue_names=(),
        tasks=(held.task,),
        skip_tasks=(),
        limit=1,
        now=T0,
        lease_until=T0 + 10**9,
    )
    assert leased.id == held.id and leased.epoch == 1
    await back_to(fresh, 7)
    await fresh.close()

    upgraded = await open_store(store_url)
    try:
        got = await upgraded.get_job(held.id)
        assert got is not None and (got.attempt, got.epoch) == (1, 1)
        other = await upgraded.get_job(waiting.id)
        assert other is not None and other.epoch == 0
    finally:
        await upgraded.close()


async def test_an_index_rebuilt_on_postgresql_leaves_reads_going(
    store_url: str, backend: str
) -> None:
    # version 7 rebuilds the dispatch index: other replicas' reads of the jobs table must not
    # wait for its build (only for the drop and rename, just before the step commits)
    if backend != "postgres":
        pytest.skip("PostgreSQL's locks")
    store = await open_store(store_url)
    await store.insert_jobs([new_job()])
    async with store.write_engine.begin() as conn:
        names = [c for c in await conn.run_sync(_ordered_columns, "jobs") if c not in ("seq", "id")]
        listed = ", ".join(names)
        await conn.execute(
            text(
                f"INSERT INTO jobs (id, {listed}) SELECT 'copy-' || n, {listed} "
                "FROM jobs, generate_series(1, 300000) AS n"
            )
        )
    await back_to(store, 6)
    loop = asyncio.get_running_loop()
    began = loop.time()
    upgrading = asyncio.create_task(open_store(store_url))
    reads, waited = 0, 0.0  # the longest a read waited
    try:
        while not upgrading.done():
            async with store.read_engine.begin() as conn:
                await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                started = loop.time()
                await conn.execute(text("SELECT id FROM jobs WHERE seq = 1"))
                waited = max(waited, loop.time() - started)
            reads += 1
            await asyncio.sleep(0.005)
        upgraded = await upgrading
        took = loop.time() - began
    finally:
        await store.close()
    try:
        assert await stamped(upgraded) == [latest_version()]
        assert "ix_jobs_dispatch" in await indexes(upgraded, "jobs")
        assert not any("rebuilt" in name for name in await indexes(upgraded, "jobs"))
        # dropped first, the old index's lock held reads for the whole build (about 3/4 of
        # the step: 110 of 150 ms here, 3 or 4 reads); now for a few ms
        assert reads >= 3 and waited < took / 4, (reads, waited, took)
    finally:
        await upgraded.close()


def _ordered_columns(conn: Connection, table: str) -> list[str]:
    return [str(c["name"]) for c in inspect(conn).get_columns(table)]
