"""SQLite's dispatch cycle and leases take the events' snapshots from SQL (snapshot_sql):
the same text job_snapshot writes of the job, for jobs with every field set, unicode, empty
and large documents, read by SELECT and by RETURNING alike."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest
from jobwheel.server.model import AttemptOutcome, Event, EventType, HttpTarget, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.storage import Store
from jobwheel.server.storage.convert import job_from_row, job_snapshot
from jobwheel.server.storage.schema import jobs
from jobwheel.server.storage.snapshot_sql import (
    JOB_SNAPSHOT_SQL,
    PG_JOB_SNAPSHOT_SQL,
    pg_job_snapshot_sql,
)
from jobwheel.server.storage.transitions import FireClaim

from tests.integration.storage.factories import T0, full_job, new_job, set_columns

_COLUMNS = [c.name for c in jobs.c]
# every code point a str may hold in SQLite (no lone surrogates); PostgreSQL's text holds no NUL
_EVERY_CHAR = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
_ODD = 'grüße \u2603 "q" \\ \x01\x1f\x7f\u2028 \U0001f600'
_NUL = "\x00"  # SQLite only


def test_json_quote_escapes_as_dumps() -> None:
    db = sqlite3.connect(":memory:")
    try:
        for text in (_EVERY_CHAR, _ODD + _NUL, "", "plain"):
            [(quoted,)] = db.execute("SELECT json_quote(?)", (text,))
            assert quoted == json.encoder.encode_basestring(text)
    finally:
        db.close()


async def test_to_json_escapes_as_dumps(store: Store, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("PostgreSQL's to_json")
    async with store.read_engine.connect() as conn:
        for text in (_EVERY_CHAR.replace(_NUL, ""), _ODD, "", "plain"):
            quoted = await conn.exec_driver_sql("SELECT to_json($1::text)::text", (text,))
            assert quoted.scalar_one() == json.encoder.encode_basestring(text)


async def _varied_jobs(store: Store, odd: str) -> list[str]:
    """Jobs with every run-time column at a default and off it, of each document kind."""
    made = [
        new_job(),
        full_job(),
        full_job(labels={odd: odd, "": ""}, idempotency_key=odd, queue=odd, task=odd),
        new_job(payload={"big": "x" * 200_000}, labels={"k" * 300: "v" * 3000}, priority=-(2**31)),
        new_job(http=HttpTarget("https://example.com/é", "POST", {}), timeout=2**62),
        new_job(state=JobState.SCHEDULED, next_run_time=None),
    ]
    await store.insert_jobs(made)
    run_time: list[dict[str, Any]] = [
        {},
        {
            "attempt": 3,
            "execution_count": 2,
            "released_attempts": 1,
            "start_time": T0 + 1,
            "end_time": T0 + 2,
            "last_error": odd,
            "result": {"z": [1.5, None, True], "a": odd},
            "cancel_reason": odd,
            "skipped_count": 4,
            "progress": {"done": 0.5},
            "worker_id": odd,
            "lease_expire_time": T0 + 3,
            "state": JobState.RUNNING.value,
        },
        {"result": 0, "progress": {}, "last_error": "", "attempt": 1},
        {"result": False, "end_time": 0, "start_time": -1},
        {"result": "text", "worker_id": "w", "lease_expire_time": 2**63 - 1},
        {"result": [], "attempt": 2**31 - 1},
    ]
    for job, values in zip(made, run_time, strict=True):
        if values:
            await set_columns(store, job.id, **values)
    return [job.id for job in made]


def _expected(row: Sequence[Any]) -> str:
    return job_snapshot(job_from_row(dict(zip(_COLUMNS, row, strict=True))))


async def test_sql_snapshots_equal_the_encoders(store: Store, backend: str) -> None:
    sqlite = backend == "sqlite"
    ids = await _varied_jobs(store, _ODD + _NUL if sqlite else _ODD)
    columns = ", ".join(_COLUMNS)
    snapshot = JOB_SNAPSHOT_SQL if sqlite else PG_JOB_SNAPSHOT_SQL
    # RETURNING evaluates some expressions otherwise (see snapshot_sql: IS NULL); and
    # PostgreSQL's expression qualified, in an UPDATE ... FROM of like-named columns
    statements = [
        f"SELECT {columns}, {snapshot} FROM jobs",
        f"UPDATE jobs SET update_time = update_time RETURNING {columns}, {snapshot}",
    ]
    if not sqlite:
        qualified = ", ".join(f"jobs.{c}" for c in _COLUMNS)
        statements.append(
            "UPDATE jobs SET update_time = jobs.update_time FROM (SELECT 1 AS id, 2 AS state) AS w"
            f" RETURNING {qualified}, {pg_job_snapshot_sql('jobs')}"
        )
    async with store.write_engine.connect() as conn:
        results = [(await conn.exec_driver_sql(sql)).all() for sql in statements]
        await conn.rollback()
    for rows in results:
        assert len(rows) == len(ids)
        for row in rows:
            assert row[-1] == _expected(row[:-1])


async def test_cycle_fire_and_lease_events_hold_the_encoders_snapshots(
    store: Store, backend: str
) -> None:
    odd = _ODD + _NUL if backend == "sqlite" else _ODD
    full = full_job(state=JobState.QUEUED, queue="default", task="noop", schedule=None)
    await store.insert_jobs([full, *(new_job(labels={"l": odd}) for _ in range(3))])
    await store.insert_jobs([new_job(task="remote", payload={"n": 1})])
    due = [
        new_job(state=JobState.SCHEDULED, next_run_time=T0 + 4, labels={"d": odd}) for _ in range(2)
    ]
    await store.insert_jobs(due)
    seen: list[Event] = []
    store.event_sink = seen.extend
    first = await store.claim("default", {"noop"}, 2, "w1", T0, T0 + 100)
    done = AttemptResult(AttemptOutcome.SUCCEEDED, result={"ok": odd})
    failed = AttemptResult(AttemptOutcome.FAILED, error=odd)
    endings = [
        # a job known without its seq: its snapshot is read by id
        states.settle(dataclasses.replace(first[0], seq=0), done, T0 + 5, 0.5),
        states.settle(first[1], failed, T0 + 5, 0.5),
    ]
    await store.dispatch_cycle(endings, [("default", 5)], {"noop"}, "w1", T0 + 6, T0 + 99)
    [leased] = await store.lease(
        "w2",
        queue_names=["default"],
        tasks=["remote"],
        skip_tasks=[],
        limit=1,
        now=T0 + 7,
        lease_until=T0 + 50,
    )
    lost = states.lost(leased, T0 + 8, odd, counts=False)
    assert await store.settle([lost]) == [True]
    fire = FireClaim(lambda _: 1, lambda _: None, {"noop"}, "w1", T0 + 99)
    queues, fired = await store.fire_due(T0 + 9, claim=fire)
    assert queues == {"default"} and len(fired) == 1
    async with store.read_engine.connect() as conn:
        stored = dict((await conn.exec_driver_sql("SELECT revision, job FROM events")).all())
    kinds = {e.type for e in seen}
    assert {EventType.STARTED, EventType.COMPLETED, EventType.RETRY_SCHEDULED} <= kinds
    queued = {e.job.id for e in seen if e.type is EventType.QUEUED}
    assert {job.id for job in due} <= queued  # the fire's promotion
    assert sum(e.type is EventType.STARTED for e in seen) == 6  # 2 + 2 claimed, 1 leased, 1 fired
    for event in seen:
        job = event.job if event.job.seq else dataclasses.replace(event.job, seq=first[0].seq)
        assert stored[event.revision] == job_snapshot(job)
