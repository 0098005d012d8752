"""SQLite's dispatch cycle and leases take the events' snapshots from SQL (sqlite_snapshot):
the same text job_snapshot writes of the job, for jobs with every field set, unicode, empty
and large documents, read by SELECT and by RETURNING alike."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jobwheel.server.model import AttemptOutcome, Event, EventType, HttpTarget, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.convert import job_from_row, job_snapshot
from jobwheel.server.storage.schema import jobs
from jobwheel.server.storage.sqlite_snapshot import JOB_SNAPSHOT_SQL

from tests.integration.storage.factories import T0, full_job, new_job, set_columns

_COLUMNS = [c.name for c in jobs.c]
# every code point a str may hold in SQLite (no lone surrogates)
_EVERY_CHAR = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
_ODD = 'grüße \u2603 "q" \\ \x00\x01\x1f\x7f\u2028 \U0001f600'


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        yield s
    finally:
        await s.close()


def test_json_quote_escapes_as_dumps() -> None:
    db = sqlite3.connect(":memory:")
    try:
        for text in (_EVERY_CHAR, _ODD, "", "plain"):
            [(quoted,)] = db.execute("SELECT json_quote(?)", (text,))
            assert quoted == json.encoder.encode_basestring(text)
    finally:
        db.close()


async def _varied_jobs(store: Store) -> list[str]:
    """Jobs with every run-time column at a default and off it, of each document kind."""
    made = [
        new_job(),
        full_job(),
        full_job(labels={_ODD: _ODD, "": ""}, idempotency_key=_ODD, queue=_ODD, task=_ODD),
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
            "last_error": _ODD,
            "result": {"z": [1.5, None, True], "a": _ODD},
            "cancel_reason": _ODD,
            "skipped_count": 4,
            "progress": {"done": 0.5},
            "worker_id": _ODD,
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


def _expected(row: sqlite3.Row | tuple[Any, ...]) -> str:
    return job_snapshot(job_from_row(dict(zip(_COLUMNS, row, strict=True))))


async def test_sql_snapshots_equal_the_encoders(sqlite_store: Store, tmp_path: Path) -> None:
    ids = await _varied_jobs(sqlite_store)
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        columns = ", ".join(_COLUMNS)
        selected = db.execute(f"SELECT {columns}, {JOB_SNAPSHOT_SQL} FROM jobs").fetchall()
        # RETURNING evaluates some expressions otherwise (see sqlite_snapshot: IS NULL)
        db.execute("BEGIN")
        returned = db.execute(
            f"UPDATE jobs SET update_time = update_time RETURNING {columns}, {JOB_SNAPSHOT_SQL}"
        ).fetchall()
        db.execute("ROLLBACK")
    finally:
        db.close()
    assert len(selected) == len(returned) == len(ids)
    for row in [*selected, *returned]:
        assert row[-1] == _expected(row[:-1])


async def test_cycle_and_lease_events_hold_the_encoders_snapshots(
    sqlite_store: Store, tmp_path: Path
) -> None:
    full = full_job(state=JobState.QUEUED, queue="default", task="noop", schedule=None)
    await sqlite_store.insert_jobs([full, *(new_job(labels={"l": _ODD}) for _ in range(3))])
    await sqlite_store.insert_jobs([new_job(task="remote", payload={"n": 1})])
    seen: list[Event] = []
    sqlite_store.event_sink = seen.extend
    first = await sqlite_store.claim("default", {"noop"}, 2, "w1", T0, T0 + 100)
    done = AttemptResult(AttemptOutcome.SUCCEEDED, result={"ok": _ODD})
    failed = AttemptResult(AttemptOutcome.FAILED, error=_ODD)
    endings = [
        # a job known without its seq: its snapshot is read by id
        states.settle(dataclasses.replace(first[0], seq=0), done, T0 + 5, 0.5),
        states.settle(first[1], failed, T0 + 5, 0.5),
    ]
    await sqlite_store.dispatch_cycle(endings, [("default", 5)], {"noop"}, "w1", T0 + 6, T0 + 99)
    [leased] = await sqlite_store.lease(
        "w2",
        queue_names=["default"],
        tasks=["remote"],
        skip_tasks=[],
        limit=1,
        now=T0 + 7,
        lease_until=T0 + 50,
    )
    lost = states.lost(leased, T0 + 8, _ODD, counts=False)
    assert await sqlite_store.settle([lost]) == [True]
    db = sqlite3.connect(tmp_path / "s.db")
    try:
        stored = dict(db.execute("SELECT revision, job FROM events"))
    finally:
        db.close()
    kinds = {e.type for e in seen}
    assert {EventType.STARTED, EventType.COMPLETED, EventType.RETRY_SCHEDULED} <= kinds
    assert sum(e.type is EventType.STARTED for e in seen) == 5  # 2 + 2 claimed, 1 leased
    for event in seen:
        job = event.job if event.job.seq else dataclasses.replace(event.job, seq=first[0].seq)
        assert stored[event.revision] == job_snapshot(job)
