"""Jobs without idempotency keys take a fast way in: on SQLite one statement for all of their
rows (bound as a JSON array) and their events built from those rows; on PostgreSQL, when they
are alike, one statement with the shared values once (pg_enqueue.py). The fast way stores the
same rows and events and returns the same jobs as the general one (row by row on SQLite, COPY
on PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from jobwheel.server.model import Event, HttpTarget, NewJob, Schedule
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage import store as store_module
from jobwheel.server.storage.convert import job_snapshot
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.conftest import fresh_pg_schema
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
    url: str, batches: Sequence[list[NewJob]], general: bool, monkeypatch: pytest.MonkeyPatch
) -> Stored:
    """Stores `batches` (the general way if `general`); returns what is stored and how many
    batches went the fast way."""
    store = await open_store(url)
    sqlite = store.dialect.single_writer
    emitted: list[Event] = []
    store.event_sink = emitted.extend
    results = []
    fast = 0
    name = "sqlite_enqueue_json" if sqlite else "pg_enqueue_alike"
    fast_way = getattr(store_module, name)

    def counted(*args: Any) -> Any:
        nonlocal fast
        fast += 1
        return fast_way(*args)

    monkeypatch.setattr(store_module, name, counted)
    if general:  # SQLite: rows bound one by one; PostgreSQL: not alike (COPY, or INSERT below 64)
        monkeypatch.setattr(store_module, "json_rows", lambda rows: None)
        monkeypatch.setattr(store_module, "shared_job_values", lambda jobs: None)
    try:
        for i, batch in enumerate(batches):
            if i == 2:  # the newest rows deleted: AUTOINCREMENT skips their seqs
                async with store.write_engine.begin() as conn:
                    await conn.execute(
                        text("DELETE FROM jobs WHERE seq > (SELECT max(seq) - 2 FROM jobs)")
                    )
            results.append(await store.insert_jobs(batch))
        kinds = ", typeof(payload), typeof(timeout)" if sqlite else ""
        async with store.read_engine.connect() as conn:
            jobs = (await conn.execute(text(f"SELECT *{kinds} FROM jobs ORDER BY seq"))).all()
            events = (await conn.execute(text("SELECT * FROM events ORDER BY revision"))).all()
    finally:
        await store.close()
        monkeypatch.undo()
    stored = ([tuple(row) for row in jobs], [tuple(row) for row in events])
    # what the callers get: the jobs (with seqs) and their events, by revision
    for done in results:
        assert all(not existed for _, existed in done)
    returned = [(job.seq, job.id, job.payload) for done in results for job, _ in done]
    rows = {row[0]: (row[0], row[1], json.loads(row[4])) for row in stored[0]}
    assert [job for job in returned if job[0] in rows] == list(rows.values())
    assert [(e.revision, e.job.id) for e in emitted] == [(row[0], row[1]) for row in stored[1]]
    for event, row in zip(emitted, stored[1], strict=True):
        # the snapshot of the job returned
        assert json.loads(row[4]) == json.loads(job_snapshot(event.job))
    return stored, fast


@pytest.mark.parametrize(
    ("batches", "fast_sqlite", "fast_pg"),
    [
        ([_plain_batch(70, T0), _plain_batch(40, T0 + 1) + _plain_batch(30, T0 + 2)], 2, 2),
        ([[replace(j, labels={"t": 'a"b', "é": "😀"}) for j in _plain_batch(64, T0)]], 1, 1),
        ([_mixed_batch(), _plain_batch(4, T0 + 20), _mixed_batch()], 3, 1),
        # an id with a control character: its events cannot be built from its row
        (
            [[new_job(id=f"id\n{i}\x01", create_time=T0) for i in range(64)], _plain_batch(3, T0)],
            1,
            1,
        ),
    ],
    ids=["plain", "labels", "mixed", "control-id"],
)
async def test_the_fast_way_stores_what_the_general_way_stores(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    batches: list[list[NewJob]],
    fast_sqlite: int,
    fast_pg: int,
) -> None:
    fast = await _store_all(db_url, batches, False, monkeypatch)
    async with _another(db_url) as other:
        general = await _store_all(other, batches, True, monkeypatch)
    assert fast[1] == (fast_sqlite if db_url.startswith("sqlite") else fast_pg)
    assert general[1] == 0
    assert fast[0] == general[0]


@asynccontextmanager
async def _another(url: str) -> AsyncIterator[str]:
    """An empty database of the backend of `url`."""
    if url.startswith("sqlite"):
        yield url.replace(".db", "-general.db")
    else:
        async with fresh_pg_schema() as other:
            yield other


async def test_texts_holding_nul_are_stored_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: U+0000 in a shared column (a parameter of its own: the fast way) or in a
    payload (json_extract cuts a text there: bound row by row)."""
    batches = [
        _plain_batch(3, T0),
        [replace(j, queue="q\x00") for j in _plain_batch(3, T0)],
        [new_job(payload={"nul": "a\x00b"}, create_time=T0)],
    ]
    fast = await _store_all(f"sqlite:///{tmp_path / 'a.db'}", batches, False, monkeypatch)
    general = await _store_all(f"sqlite:///{tmp_path / 'b.db'}", batches, True, monkeypatch)
    assert (fast[1], general[1]) == (2, 0)
    assert fast[0] == general[0]
    # the queue column (two of the second batch's rows deleted, see _store_all)
    assert [row[2] for row in fast[0][0]] == ["default"] * 3 + ["q\x00"] + ["default"]


def _in_chunks(batch: list[NewJob], size: int) -> Iterator[list[NewJob]]:
    return (batch[i : i + size] for i in range(0, len(batch), size))


async def _rows(store: Store) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    async with store.read_engine.connect() as conn:
        jobs = (await conn.execute(text("SELECT * FROM jobs ORDER BY seq"))).all()
        events = (await conn.execute(text("SELECT * FROM events ORDER BY revision"))).all()
        head_row = text("SELECT revision FROM event_head WHERE id = 1")
        head = (await conn.execute(head_row)).scalar_one()
    return [tuple(r) for r in jobs], [tuple(r) for r in events], head


@pytest.mark.parametrize(
    "batches",
    [
        [_plain_batch(7, T0), _plain_batch(3, T0 + 1)],
        [[replace(j, labels={"t": 'a"b', "é": "😀"}) for j in _plain_batch(8, T0)]],
        [_mixed_batch(), _plain_batch(4, T0 + 20) + _mixed_batch()],
    ],
    ids=["plain", "labels", "mixed"],
)
async def test_chunks_store_what_one_insert_stores(
    batches: list[list[NewJob]], backend: str, tmp_path: Path
) -> None:
    """A batch created in chunks of 3 (alike or not) stores the rows and events that
    insert_jobs stores, returns the same jobs and emits their events in order."""
    stored = []
    for chunked in (False, True):
        async with _fresh_url(backend, tmp_path / f"{chunked}.db") as url:
            store = await open_store(url)
            emitted: list[Event] = []
            store.event_sink = emitted.extend
            try:
                returned = []
                for batch in batches:
                    if chunked:
                        returned += await store.insert_new_jobs_in_chunks(_in_chunks(batch, 3))
                    else:
                        returned += [job for job, _ in await store.insert_jobs(batch)]
                jobs, events, head = await _rows(store)
            finally:
                await store.close()
        assert [job.seq for job in returned] == [row[0] for row in jobs]
        assert [(e.revision, e.job.id) for e in emitted] == [(row[0], row[1]) for row in events]
        assert head == events[-1][0] == len(events) == len(jobs)
        for event, row in zip(emitted, events, strict=True):
            assert json.loads(row[4]) == json.loads(job_snapshot(event.job))
        stored.append((jobs, events, [e.job for e in emitted] == returned))
    assert stored[0] == stored[1]
    assert stored[1][2]


def _fresh_url(backend: str, sqlite_file: Path) -> AbstractAsyncContextManager[str]:
    """An empty database of `backend`: a fresh schema, or `sqlite_file`."""
    if backend == "postgres":
        return fresh_pg_schema()
    return nullcontext(f"sqlite:///{sqlite_file}")


async def test_a_failed_chunk_or_a_raising_producer_stores_nothing(
    store: Store, backend: str
) -> None:
    """Whatever ends the chunks early (the producer raising after a chunk went in, a chunk the
    database refuses) rolls back every chunk; the store works on afterwards."""
    [existing] = await store.insert_jobs([new_job(create_time=T0)])
    before = await _rows(store)

    def raising() -> Iterator[list[NewJob]]:
        yield _plain_batch(3, T0)
        yield _plain_batch(3, T0)
        raise RuntimeError("refused by the producer")

    with pytest.raises(RuntimeError, match="refused by the producer"):
        await store.insert_new_jobs_in_chunks(raising())
    taken = [*_plain_batch(3, T0), replace(new_job(create_time=T0), id=existing[0].id)]
    with pytest.raises(DBAPIError):  # the second chunk repeats a stored id
        await store.insert_new_jobs_in_chunks(_in_chunks(taken, 3))
    if backend == "postgres":  # an id PostgreSQL's fast way cannot carry (SQLite's goes row by row)
        with pytest.raises(ValueError, match="control character"):
            await store.insert_new_jobs_in_chunks(iter([[new_job(id="a\x01", create_time=T0)]]))
    assert await _rows(store) == before
    assert len(await store.insert_new_jobs_in_chunks(_in_chunks(_plain_batch(5, T0), 2))) == 5
    assert len((await _rows(store))[0]) == 6
    # empty chunks are passed over, wherever they come
    assert len(await store.insert_new_jobs_in_chunks(iter([[], _plain_batch(2, T0), []]))) == 2
    assert await store.insert_new_jobs_in_chunks(iter([[]])) == []
    assert len((await _rows(store))[0]) == 8
    if backend == "sqlite":  # a chunk the JSON array cannot carry goes row by row
        odd = [new_job(id="a\x01", create_time=T0), new_job(payload={"nul": "a\x00b"})]
        chunked = await store.insert_new_jobs_in_chunks(iter([_plain_batch(2, T0), odd]))
        assert [job.id for job in chunked][2:] == [odd[0].id, odd[1].id]
        stored = await store.get_job(odd[1].id)
        assert stored is not None and stored.payload == {"nul": "a\x00b"}
        assert len((await _rows(store))[0]) == 12


async def test_sqlite_takes_chunks_while_its_writer_is_free(tmp_path: Path) -> None:
    """On SQLite a batch goes in chunks only while no other write holds the writer (else it
    waits in a group commit), and never in memory."""
    store = await open_store(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        assert store.chunks_now()
        async with store._write():
            assert not store.chunks_now()
        assert store.chunks_now()
    finally:
        await store.close()
    in_memory = await open_store("sqlite://")
    try:
        assert not in_memory.chunks_now()
    finally:
        await in_memory.close()
