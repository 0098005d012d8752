"""Partial indexes (a state change writes fewer index entries; PostgreSQL's since version 5,
SQLite's since version 6; the dispatch index without the state since version 7) still serve
the queries that need them, the lists and counts over
every state are right, and deleting jobs deletes their attempts (without a foreign key on
PostgreSQL), on a fresh database and on one upgraded from an older version."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from jobwheel.server.model import AttemptOutcome, JobFilter, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.rules.states import DELETE
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.migrations import latest_version
from jobwheel.server.storage.schema import attempts
from sqlalchemy import event, func, inspect, select, text

from tests.integration.storage.factories import T0, new_job, set_columns
from tests.integration.storage.test_migrations import back_to, stamped

WORKER = "w1"
# (queue, task, state) of the jobs of `populate`, in insertion order
MIX = [
    (queue, task, state)
    for queue in ("emails", "reports")
    for task in ("send", "render")
    for state in (
        JobState.QUEUED,
        JobState.SCHEDULED,
        JobState.RETRYING,
        JobState.RUNNING,
        JobState.COMPLETED,
        JobState.FAILED,
    )
]


async def populate(store: Store) -> list[str]:
    """One job of each (queue, task, state) of MIX, each with an idempotency key; their ids."""
    inserted = await store.insert_jobs(
        [
            new_job(queue=q, task=t, idempotency_key=f"k{i}", next_run_time=T0 + i)
            for i, (q, t, _) in enumerate(MIX)
        ]
    )
    ids = [job.id for job, _ in inserted]
    for job_id, (_, _, state) in zip(ids, MIX, strict=True):
        ended = state in (JobState.COMPLETED, JobState.FAILED)
        await set_columns(store, job_id, state=state.value, end_time=T0 + 100 if ended else None)
    return ids


async def check_reads(store: Store, ids: list[str]) -> None:
    """Lists by state, queue and task (newest first), counts and idempotency keys."""
    newest_first = list(reversed(list(zip(ids, MIX, strict=True))))
    for state in JobState:
        want = [i for i, (_, _, s) in newest_first if s is state]
        got = await store.list_jobs(JobFilter(states=(state,)), limit=100)
        assert [j.id for j in got] == want, state
    for queue in ("emails", "reports"):
        got = await store.list_jobs(JobFilter(queues=(queue,)), limit=100)
        assert [j.id for j in got] == [i for i, (q, _, _) in newest_first if q == queue]
    got = await store.list_jobs(JobFilter(tasks=("render",), states=(JobState.QUEUED,)), limit=9)
    assert [j.id for j in got] == [
        i for i, (_, t, s) in newest_first if t == "render" and s is JobState.QUEUED
    ]
    stats = await store.job_stats(JobFilter(), T0)
    assert stats.by_state == {s: 4 for s in {s for _, _, s in MIX}}
    assert stats.by_queue == {"emails": 12, "reports": 12}
    depths = await store.queue_depths()
    assert depths["emails"] == {s: 2 for _, _, s in MIX[:6]}
    # a key taken is still taken (by the job that holds it); jobs without one never collide
    [(again, existed)] = await store.insert_jobs([new_job(idempotency_key="k3")])
    assert existed and again.id == ids[3]
    fresh = await store.insert_jobs([new_job(), new_job()])
    assert [existed for _, existed in fresh] == [False, False]
    due = await store.due_before(T0 + 10**9, 100)
    waiting = (JobState.SCHEDULED, JobState.RETRYING)
    assert sorted(i for i, _ in due) == sorted(
        i for i, (_, _, s) in zip(ids, MIX, strict=True) if s in waiting
    )


async def test_every_state_lists_and_counts(store: Store) -> None:
    await check_reads(store, await populate(store))


@pytest.mark.parametrize("version", [4, 5, 6])
async def test_an_older_database_upgrades_and_keeps_its_jobs(store_url: str, version: int) -> None:
    old = await open_store(store_url)
    ids = await populate(old)
    await back_to(old, version)
    await old.close()
    upgraded = await open_store(store_url)
    try:
        assert await stamped(upgraded) == [latest_version()]
        assert await index_definitions(upgraded) == partial_indexes(upgraded)
        if upgraded.dialect.name == "postgresql":
            async with upgraded.read_engine.connect() as conn:
                keys = await conn.run_sync(lambda c: inspect(c).get_foreign_keys("attempts"))
            assert keys == []
        await check_reads(upgraded, ids)
        # claims and settlements go on through the narrowed dispatch index
        claimed = await upgraded.claim("emails", {"send"}, 10, WORKER, T0, T0 + 10)
        assert [j.id for j in claimed] == [ids[0]]
    finally:
        await upgraded.close()


def hold_keys_by_the_table(path: str) -> None:
    """Rebuilds the jobs table of the SQLite file at `path` as a database made before version
    5 had it: its keys unique by the table's own constraint (an index SQLite names itself and
    only a rebuild drops), no uq_jobs_idempotency_key."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = OFF")  # attempts keep their rows
        db.execute("BEGIN IMMEDIATE")
        [(table,)] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'")
        others = [
            sql
            for name, sql in db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
            )
            if sql is not None and name != "uq_jobs_idempotency_key"
        ]
        head, _, _ = table.rpartition(")")
        keyed = ", CONSTRAINT uq_jobs_idempotency_key UNIQUE (idempotency_key))"
        db.execute(head.replace("CREATE TABLE jobs", "CREATE TABLE old_jobs", 1) + keyed)
        db.execute("INSERT INTO old_jobs SELECT * FROM jobs")
        db.execute("DROP TABLE jobs")
        db.execute("ALTER TABLE old_jobs RENAME TO jobs")
        for sql in others:
            db.execute(sql)
        db.execute("COMMIT")
    finally:
        db.close()


async def test_a_sqlite_database_keyed_by_its_table_keeps_its_constraint(
    store_url: str, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's table constraint")
    old = await open_store(store_url)
    ids = await populate(old)
    await back_to(old, 4)
    await old.close()
    hold_keys_by_the_table(store_url.removeprefix("sqlite:///"))
    upgraded = await open_store(store_url)
    try:
        assert await stamped(upgraded) == [latest_version()]
        narrowed = dict(PARTIAL_SQLITE)
        del narrowed["uq_jobs_idempotency_key"]  # no second index beside the constraint's
        assert await index_definitions(upgraded) == narrowed
        await check_reads(upgraded, ids)  # keys taken stay taken
    finally:
        await upgraded.close()


# what version 5 narrowed (version 7 the dispatch index again), as pg_indexes spells it (each
# index's definition after ON)
PARTIAL_POSTGRES = {
    "ix_jobs_due": "jobs USING btree (state, next_run_time) WHERE ((state)::text = ANY "
    "((ARRAY['scheduled'::character varying, 'retrying'::character varying])::text[]))",
    "ix_jobs_dispatch": "jobs USING btree (queue, priority DESC, seq) "
    "WHERE ((state)::text = 'queued'::text)",
    "uq_jobs_idempotency_key": "jobs USING btree (idempotency_key) "
    "WHERE (idempotency_key IS NOT NULL)",
    "ix_attempts_end_time": "attempts USING btree (end_time) WHERE (end_time IS NOT NULL)",
}


# what version 6 narrowed on SQLite (version 7 the dispatch index again), as sqlite_master
# keeps it (after ON)
PARTIAL_SQLITE = {
    "ix_jobs_due": "jobs (state, next_run_time) WHERE state = 'scheduled' OR state = 'retrying'",
    "ix_jobs_dispatch": "jobs (queue, priority DESC, seq) WHERE state = 'queued'",
    "uq_jobs_idempotency_key": "jobs (idempotency_key) WHERE idempotency_key IS NOT NULL",
    "ix_attempts_end_time": "attempts (end_time) WHERE end_time IS NOT NULL",
}


def partial_indexes(store: Store) -> dict[str, str]:
    return PARTIAL_POSTGRES if store.dialect.name == "postgresql" else PARTIAL_SQLITE


async def index_definitions(store: Store) -> dict[str, str]:
    """The definitions of the indexes of `partial_indexes`, by name, each after its ON."""
    names = list(partial_indexes(store))
    if store.dialect.name == "sqlite":
        sql = text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN "
            f"({', '.join(repr(n) for n in names)})"
        )
        async with store.read_engine.connect() as conn:
            return {
                name: definition.partition(" ON ")[2]
                for name, definition in await conn.execute(sql)
            }
    sql = text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND indexname = ANY(:names)"
    )
    async with store.read_engine.connect() as conn:
        rows = await conn.execute(sql, {"names": names})
        # "CREATE INDEX name ON schema.table USING ..." -> "table USING ..."
        return {
            name: definition.partition(" ON ")[2].partition(".")[2] for name, definition in rows
        }


async def test_a_fresh_database_has_the_partial_indexes(store: Store) -> None:
    assert await index_definitions(store) == partial_indexes(store)


@contextmanager
def statements(store: Store) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (and parameters) the store sends while inside."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        seen.append((statement, params))

    # and what runs on asyncpg's connection itself (storage.pg_cycle)
    def logged(query: Any) -> None:
        seen.append((query.query, query.args))

    hooked: list[Any] = []

    def hook(dbapi_connection: Any, _record: Any = None, _proxy: Any = None) -> None:
        driver = dbapi_connection.driver_connection
        if hasattr(driver, "add_query_logger") and driver not in hooked:
            driver.add_query_logger(logged)
            hooked.append(driver)

    # the connections the store holds between its transactions (held_connections.py), and
    # any it checks out while inside
    for held in (store._writer, store._readers):
        for conn in held._idle if held is not None else ():
            hook(conn.sync_connection.connection)  # type: ignore[union-attr]
    engines = {store.write_engine.sync_engine, store.read_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
        event.listen(engine, "checkout", hook)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
            event.remove(engine, "checkout", hook)
        for driver in hooked:
            driver.remove_query_logger(logged)


def sql_literal(value: Any) -> str:
    """`value` (a parameter the store sent) as an SQL constant of undecided type."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value).upper() if isinstance(value, bool) else str(value)
    if isinstance(value, list):
        quoted = (
            "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
            for v in value
        )
        return sql_literal("{" + ",".join(quoted) + "}")
    return "'" + str(value).replace("'", "''") + "'"


async def generic_plan(store: Store, statement: str, params: Any) -> str:
    """The plan PostgreSQL's plan cache may settle on for a prepared statement (one that
    knows nothing of its parameters' values), sequential scans discouraged."""
    async with store.write_engine.connect() as conn:
        await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        await conn.exec_driver_sql("SET enable_seqscan = off")
        await conn.exec_driver_sql(f"PREPARE probe AS {statement}")
        args = f"({', '.join(sql_literal(p) for p in params)})" if params else ""
        plan = await conn.exec_driver_sql(f"EXPLAIN EXECUTE probe{args}")
        lines = [row[0] for row in plan]
        await conn.exec_driver_sql("DEALLOCATE probe")
        await conn.rollback()
    return "\n".join(lines)


async def test_queries_reach_the_partial_indexes_in_generic_plans(
    store: Store, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's plans")
    # many finished jobs beside a few waiting and queued ones, as in a busy database
    done = await store.insert_jobs([new_job(queue="bulk") for _ in range(3000)])
    async with store.write_engine.begin() as conn:
        await conn.execute(
            text("UPDATE jobs SET state = 'completed', end_time = :t WHERE queue = 'bulk'"),
            {"t": T0},
        )
    assert len(done) == 3000
    await populate(store)
    await vacuum(store)
    with statements(store) as seen:
        await store.due_before(T0 + 10**9, 10)
        await store.queues_with_queued_jobs()
        await store.fire_due(T0 + 10**9)
        await store.lease(
            WORKER,
            queue_names=["emails"],
            tasks=["send"],
            skip_tasks=(),
            limit=5,
            now=T0,
            lease_until=T0 + 10,
        )
        await store.prune_finished(T0 + 1)
        await store.queue_depths(["emails", "bulk"])  # ListQueues' counts
    wanted = {
        # the wheel's load, the misfire catch-up's look-up and the promotion
        "ix_jobs_due": [s for s in seen if "next_run_time <" in s[0]],
        "ix_jobs_dispatch": [s for s in seen if "FOR UPDATE SKIP LOCKED" in s[0]],
        "ix_jobs_end_time": [s for s in seen if "end_time <" in s[0]],  # the pick in the DELETE
        "Index Only Scan using ix_jobs_queue_seq": [
            s for s in seen if "GROUP BY jobs.queue, jobs.state" in s[0]
        ],
    }
    await vacuum(store)  # the statements above changed rows: their pages are visible again
    for index, found in wanted.items():
        assert found, index
        for statement, params in found:
            assert index in await generic_plan(store, statement, params), statement[:300]


async def vacuum(store: Store) -> None:
    """As autovacuum leaves a table: statistics, and the pages marked all-visible that
    index-only scans need."""
    async with store.write_engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.exec_driver_sql("VACUUM ANALYZE")


async def attempt_count(store: Store, job_ids: list[str]) -> int:
    stmt = select(func.count()).select_from(attempts).where(attempts.c.job_id.in_(job_ids))
    async with store.read_engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def test_deleting_jobs_deletes_their_attempts(store: Store) -> None:
    await store.insert_jobs([new_job() for _ in range(4)])
    claimed = await store.claim("default", {"noop"}, 4, WORKER, T0, T0 + 10)
    ok = AttemptResult(AttemptOutcome.SUCCEEDED, result=None)
    assert await store.settle([states.settle(j, ok, T0 + 1, 0.5) for j in claimed]) == [True] * 4
    ids = [j.id for j in claimed]
    assert await attempt_count(store, ids) == 4
    deleted = await store.apply_action(JobFilter(ids=tuple(ids[:2])), DELETE, T0 + 2)
    assert sorted(j.id for j in deleted) == sorted(ids[:2])
    assert await attempt_count(store, ids[:2]) == 0
    assert await attempt_count(store, ids[2:]) == 2  # others' attempts stay
    assert await store.prune_finished(T0 + 3) == 2
    assert await attempt_count(store, ids) == 0


async def test_settlements_find_their_jobs_by_id_not_by_state(store: Store, backend: str) -> None:
    """The settlement reads each job by id: through the state index it would visit every
    RUNNING version claims left behind since the last vacuum (a long drain's cost grew with its
    length). Each attempt it ends it finds by the attempts' index."""
    if backend != "postgres":
        pytest.skip("PostgreSQL's plans")
    await store.insert_jobs([new_job() for _ in range(600)])
    ok = AttemptResult(AttemptOutcome.SUCCEEDED, result=None)
    claimed = await store.claim("default", {"noop"}, 500, WORKER, T0, T0 + 10)
    await store.settle([states.settle(j, ok, T0 + 1, 0.5) for j in claimed])
    async with store.write_engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.exec_driver_sql("ANALYZE")  # few RUNNING jobs, as the statistics say
    running = await store.claim("default", {"noop"}, 5, WORKER, T0 + 2, T0 + 10)
    with statements(store) as seen:
        assert (
            await store.settle([states.settle(j, ok, T0 + 3, 0.5) for j in running]) == [True] * 5
        )
    [(statement, params)] = [s for s in seen if "UPDATE jobs" in s[0]]
    async with store.write_engine.connect() as conn:
        await conn.exec_driver_sql("SET plan_cache_mode = force_custom_plan")
        await conn.exec_driver_sql(f"PREPARE probe AS {statement}")
        args = ", ".join(sql_literal(p) for p in params)
        plan = "\n".join(r[0] for r in await conn.exec_driver_sql(f"EXPLAIN EXECUTE probe({args})"))
        await conn.rollback()
    assert "ix_jobs_state_seq" not in plan, plan
    assert "uq_jobs_id" in plan, plan
    # each attempt by its index, never a comparison of every settled job with every ending
    assert "Join Filter" not in plan and "ix_attempts_job" in plan, plan
