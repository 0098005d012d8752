"""SQLite's plans reach its partial indexes (version 6): SQLite uses one only when the query's
WHERE implies the index's at prepare time, so states must be constants there, in the form of
the predicate (schema.state_is). The claims and leases that run as raw SQL in the driver's
thread (sqlite_cycle._start) are recorded there, the fire's raw statements (sqlite_fire) by
the write connection's trace callback, with their parameters written in; the rest through
SQLAlchemy's events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from jobwheel.server.model import Job, JobFilter, JobState
from jobwheel.server.storage import Store, sqlite_cycle
from jobwheel.server.storage.driver import driver_connection
from sqlalchemy import text

from tests.integration.storage.factories import T0, new_job
from tests.integration.storage.test_partial_indexes import WORKER, populate, statements

HOUR = 3600 * 1_000_000


@pytest.fixture
async def busy(store: Store, backend: str) -> Store:
    """A SQLite store with many finished jobs beside a few of every other state, as a busy
    database holds (not analyzed: the server never runs ANALYZE)."""
    if backend != "sqlite":
        pytest.skip("SQLite's plans")
    await store.insert_jobs([new_job(queue="bulk") for _ in range(3000)])
    async with store.write_engine.begin() as conn:
        await conn.execute(
            text("UPDATE jobs SET state = 'completed', end_time = :t WHERE queue = 'bulk'"),
            {"t": T0},
        )
    await populate(store)
    return store


@contextmanager
def raw_claims(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """The claims (and leases) run in the driver's thread while inside."""
    seen: list[tuple[str, Any]] = []
    start = sqlite_cycle._start

    def record(db: Any, sql: str, params: Sequence[object], *args: Any) -> Any:
        seen.append((sql, tuple(params)))
        return start(db, sql, params, *args)

    with monkeypatch.context() as patch:
        patch.setattr(sqlite_cycle, "_start", record)
        yield seen


@asynccontextmanager
async def traced(store: Store) -> AsyncIterator[list[tuple[str, Any]]]:
    """What the write connection runs while inside (its trace callback: parameters written
    into the text), each with no parameters left."""
    seen: list[tuple[str, Any]] = []

    def record(statement: str) -> None:
        seen.append((statement, ()))

    async with store._raw_write() as conn:  # the store's one write connection
        driver = await driver_connection(conn)
    await driver._execute(driver._conn.set_trace_callback, record)
    try:
        yield seen
    finally:
        await driver._execute(driver._conn.set_trace_callback, None)


async def plan(store: Store, statement: str, params: Any) -> str:
    async with store.read_engine.connect() as conn:
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
        return "\n".join(row[3] for row in rows)


def late(job: Job) -> tuple[int | None, int]:
    return T0 + 2 * HOUR, 1


async def test_queries_reach_the_partial_indexes(
    busy: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = busy
    lease = {"tasks": ["send"], "skip_tasks": (), "limit": 5, "now": T0, "lease_until": T0 + 10}
    async with traced(store) as raw:
        with statements(store) as seen, raw_claims(monkeypatch) as claims:
            await store.due_before(T0 + 10**9, 10)
            # a misfired recurring job is caught up through the due index, then everything due
            # is promoted through it
            await store.fire_due(T0 + 10**9, misfire_before=T0 + HOUR, catch_up=late)
            await store.dispatch_cycle([], [("emails", 1)], {"send"}, WORKER, T0, T0 + 10)
            await store.lease(WORKER, queue_names=["emails"], **lease)
            await store.lease(WORKER, queue_names=["emails", "reports"], **lease)
            await store.lease(WORKER, queue_names=[], **lease)  # every queue: the skip scan
            await store.prune_finished(T0 + 1)
            await store.job_stats(JobFilter(), T0)
            await store.queue_depths()  # ListQueues' counts
            await store.queue_depths(["emails"])
            await store.insert_jobs([new_job(idempotency_key="k3"), new_job(idempotency_key="k")])
    wanted = {
        # the wheel's load, and the fire's catch-up and promotion (its rows then by seq)
        "ix_jobs_due": [
            s
            for s in [*seen, *raw]
            if "next_run_time <" in s[0] and "DELETE" not in s[0] and "seq IN" not in s[0]
        ],
        "ix_jobs_dispatch": claims,
        "COVERING INDEX ix_jobs_queue_seq": [
            s for s in seen if "WITH RECURSIVE" in s[0] or "GROUP BY jobs.queue, jobs.state" in s[0]
        ],
        "ix_attempts_end_time": [s for s in seen if "attempts.end_time >=" in s[0]],
        "uq_jobs_idempotency_key": [s for s in seen if "idempotency_key IN" in s[0]],
    }
    for index, found in wanted.items():
        assert found, index
        for statement, params in found:
            assert index in await plan(store, statement, params), statement[:300]
    # the claims: one by the dispatch cycle, one per queue probe of the leases
    assert len(claims) == 4
    assert [s for s in raw if "state = 'scheduled'" in s[0] and "recurring" in s[0]]
    assert [s for s in raw if s[0].startswith("UPDATE jobs SET state = 'queued'")]  # promotion
    # retention picks finished jobs through the end time's index (through the state's, it
    # read every finished job when none had passed retention), not the table
    [prune] = [s for s in seen if "end_time <" in s[0]]  # its pick is inside the DELETE
    pruning = await plan(store, *prune)
    assert "SCAN jobs" not in pruning
    assert "ix_jobs_end_time (end_time<?)" in pruning


@pytest.mark.parametrize(
    ("flt", "index"),
    [
        (JobFilter(states=(JobState.QUEUED,)), "ix_jobs_state_seq"),
        (JobFilter(queues=("emails",)), "ix_jobs_queue_seq"),
        (JobFilter(tasks=("render",)), "ix_jobs_task_seq"),
    ],
)
async def test_lists_walk_their_index_newest_first(busy: Store, flt: JobFilter, index: str) -> None:
    with statements(busy) as seen:
        await busy.list_jobs(flt, limit=10)
    [(statement, params)] = seen
    found = await plan(busy, statement, params)
    assert index in found and "TEMP B-TREE" not in found
