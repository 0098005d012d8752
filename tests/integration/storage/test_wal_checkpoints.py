"""SQLite's write-ahead log is checkpointed by a thread of its own, not by the writer."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.wal_checkpoints import (
    WRITER_AUTOCHECKPOINT_PAGES,
    WalCheckpointer,
)

from tests.integration.storage.factories import new_job

THREAD = "jobwheel-wal-checkpoints"


def threads() -> int:
    """Checkpoint threads alive in this process (another test's open store may hold one)."""
    return sum(t.name == THREAD for t in threading.enumerate())


def checkpointer(store: Store) -> WalCheckpointer:
    found = store._engines.checkpointer
    assert found is not None
    return found


async def insert(store: Store, jobs: int) -> None:
    """Writes about a page of the log per job (a 2 KiB payload, its event, the indexes)."""
    for start in range(0, jobs, 100):
        await store.insert_jobs(
            [new_job(payload={"text": "x" * 2048, "n": n}) for n in range(start, start + 100)]
        )


def size_of(path: Path) -> int:
    return path.stat().st_size


async def grows(path: Path, size: int, within: float) -> bool:
    """Whether the file at `path` passes `size` bytes within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if size_of(path) > size:
            return True
        await asyncio.sleep(0.02)
    return size_of(path) > size


async def test_the_log_reaches_the_file_without_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    before = threads()
    store = await open_store(f"sqlite:///{path}")
    try:
        assert threads() == before + 1
        async with store.write_engine.connect() as conn:
            threshold = (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one()
        assert threshold == WRITER_AUTOCHECKPOINT_PAGES
        await asyncio.sleep(0.2)  # the schema's pages are in the file
        size = size_of(path)
        await insert(store, 1_000)  # far fewer pages than the writer's threshold
        assert await grows(path, size, within=5.0)
        assert checkpointer(store).passes > 0
    finally:
        await store.close()
    assert threads() == before


async def test_without_the_thread_the_file_stays_as_it_was(tmp_path: Path) -> None:
    # the control: the growth above is the thread's doing
    path = tmp_path / "c.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        await asyncio.to_thread(checkpointer(store).stop)
        await asyncio.sleep(0.2)
        size = size_of(path)
        await insert(store, 1_000)
        assert not await grows(path, size, within=0.5)
    finally:
        await store.close()


async def test_an_in_memory_database_has_no_thread() -> None:
    before = threads()
    store = await open_store("sqlite:///:memory:")
    try:
        assert store._engines.checkpointer is None
        assert threads() == before
    finally:
        await store.close()


class _Flaky(sqlite3.Connection):
    """A connection whose first checkpoints fail as a full disk would."""

    failures = 3

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "wal_checkpoint" in sql and _Flaky.failures > 0:
            _Flaky.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


def test_failed_checkpoints_are_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _Flaky.failures = 3
    path = tmp_path / "f.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()
    ck = WalCheckpointer(
        lambda: sqlite3.connect(path, factory=_Flaky, check_same_thread=False),
        str(path),
        "FULL",
        interval=0.01,
    )
    with caplog.at_level(logging.WARNING, "jobwheel.server.storage.wal_checkpoints"):
        ck.start()
        deadline = time.monotonic() + 5
        while ck.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        ck.stop()
    assert _Flaky.failures == 0
    assert ck.passes >= 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"SQLite checkpoint of {path} failed: database or disk is full"]


def test_a_database_that_cannot_be_opened_leaves_the_checkpoints_to_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no" / "such" / "dir.db"
    ck = WalCheckpointer(lambda: sqlite3.connect(missing), str(missing), "FULL", interval=0.01)
    with caplog.at_level(logging.WARNING, "jobwheel.server.storage.wal_checkpoints"):
        ck.start()
        ck.stop()
    assert ck.passes == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"SQLite checkpoints of {missing} left to the writer: unable to open database file"
    ]
