"""On SQLite, jobs without idempotency keys are inserted with one statement for all of their
rows (bound as a JSON array) and their events built from those rows; jobs whose texts cannot
go that way are bound row by row. Both ways store the same rows and events and return the
same jobs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from jobwheel.server.model import Event, HttpTarget, NewJob, Schedule
from jobwheel.server.storage import open_store
from jobwheel.server.storage import store as store_module
from jobwheel.server.storage.convert import job_snapshot

from tests.integration.storage.factories import T0, full_job, new_job

Stored = tuple[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]], int]


def _odd_payloads() -> list[dict[str, Any]]:
    return [
        {},
        {"to": "ada@example.com", "n": 7},
        {"quote": 'a"b', "back": "c\\d", "nl": "x\ny\tz", "ctl": "\x01\x1f", "u": "\\u0001"},
        {"unicode": "é😀 ́", "line": "\u2028\u2029", "slash": "</script>"},
        {"nested": {"b": [1, "two", {"three": 3.5}], "a": {}}, "neg": -0.0, "big": 2**53},
        {"float": 1e-07, "ok": True, "none": None, "list": [None, False, 1.5]},
    ]


def _plain_batch(n: int, create_time: int) -> list[NewJob]:
    payloads = _odd_payloads()
    return [
        new_job(payload=payloads[i % len(payloads)], create_time=create_time, next_run_time=None)
        for i in range(n)
    ]


def _mixed_batch() -> list[NewJob]:
    return [
        *_plain_batch(3, T0),
        new_job(labels={"team": 'a"b', "é": "😀"}, priority=5, create_time=T0),
        full_job(idempotency_key=None),
        new_job(http=HttpTarget("https://example.com/h", "PUT", {"X": "1"}), create_time=T0),
        new_job(
            queue="other",
            task="t'ask",
            schedule=Schedule(interval=60_000_000),
            timeout=5_000_000,
            create_time=T0 + 9,
        ),
        *_plain_batch(2, T0 + 10),
    ]


async def _store_all(
    path: Path, batches: Sequence[list[NewJob]], by_rows: bool, monkeypatch: pytest.MonkeyPatch
) -> Stored:
    store = await open_store(f"sqlite:///{path}")
    emitted: list[Event] = []
    store.event_sink = emitted.extend
    results = []
    statements = 0
    one_statement = store_module.sqlite_enqueue_json

    def counted(*args: Any) -> tuple[int, int]:
        nonlocal statements
        statements += 1
        return one_statement(*args)

    monkeypatch.setattr(store_module, "sqlite_enqueue_json", counted)
    try:
        for i, batch in enumerate(batches):
            if i == 2:  # the newest rows deleted: AUTOINCREMENT skips their seqs
                with sqlite3.connect(path) as db:
                    db.execute("DELETE FROM jobs WHERE seq > (SELECT max(seq) - 2 FROM jobs)")
            if by_rows:
                with pytest.MonkeyPatch.context() as mp:
                    mp.setattr(store_module, "json_rows", lambda rows: None)
                    results.append(await store.insert_jobs(batch))
            else:
                results.append(await store.insert_jobs(batch))
    finally:
        await store.close()
        monkeypatch.undo()
    # what the callers get: the jobs (with seqs) and their events, by revision
    for done in results:
        assert all(not existed for _, existed in done)
    for event in emitted:
        assert event.job.seq > 0
    with sqlite3.connect(path) as db:
        jobs = db.execute("SELECT *, typeof(payload), typeof(timeout) FROM jobs ORDER BY seq")
        events = db.execute("SELECT *, typeof(time), typeof(job) FROM events ORDER BY revision")
        stored = (jobs.fetchall(), events.fetchall())
    returned = [(job.seq, job.id, job.payload) for done in results for job, _ in done]
    rows = {row[0]: (row[0], row[1], json.loads(row[4])) for row in stored[0]}
    assert [job for job in returned if job[0] in rows] == list(rows.values())
    assert [(e.revision, e.job.seq, e.job.id) for e in emitted] == [
        (row[0], job_seq, row[1])
        for row, job_seq in zip(stored[1], (e.job.seq for e in emitted), strict=True)
    ]
    for event, row in zip(emitted, stored[1], strict=True):
        # the snapshot of the job returned
        assert json.loads(row[4]) == json.loads(job_snapshot(event.job))
    return stored, statements


@pytest.mark.parametrize(
    ("batches", "in_one_statement"),
    [
        ([_plain_batch(50, T0), _plain_batch(7, T0 + 1) + _plain_batch(5, T0 + 2)], 2),
        ([_mixed_batch(), _plain_batch(4, T0 + 20), _mixed_batch()], 3),
        # an id with a control character: its events cannot be built from its row
        ([[new_job(id="id\nwith\x01ctl", create_time=T0)], _plain_batch(3, T0)], 1),
        # U+0000 in a shared column (no literal in a statement), in a payload (json_extract
        # cuts a text there)
        (
            [
                _plain_batch(3, T0),
                [replace(j, queue="q\x00") for j in _plain_batch(3, T0)],
                [new_job(payload={"nul": "a\x00b"}, create_time=T0)],
            ],
            1,
        ),
    ],
    ids=["plain", "mixed", "control-id", "nul"],
)
async def test_one_statement_stores_what_row_by_row_stores(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batches: list[list[NewJob]],
    in_one_statement: int,
) -> None:
    fast = await _store_all(tmp_path / "fast.db", batches, False, monkeypatch)
    slow = await _store_all(tmp_path / "slow.db", batches, True, monkeypatch)
    assert fast[1] == in_one_statement
    assert slow[1] == 0
    assert fast[0] == slow[0]
