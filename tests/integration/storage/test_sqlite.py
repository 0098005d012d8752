"""SQLite specifics: pragmas on every connection, BEGIN IMMEDIATE writes, URL forms."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from jobwheel.server.model import JobFilter
from jobwheel.server.storage import StorageUrlError, Store, open_store
from jobwheel.server.storage.dialect import parse_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.storage.factories import new_job


async def pragma(engine: AsyncEngine, name: str) -> object:
    async with engine.connect() as conn:
        return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()


@pytest.mark.parametrize(("setting", "value"), [("FULL", 2), ("NORMAL", 1), ("OFF", 0)])
async def test_pragmas_on_reader_and_writer(tmp_path: Path, setting: str, value: int) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'p.db'}", sqlite_synchronous=setting)
    try:
        for engine in (store.write_engine, store.read_engine):
            assert await pragma(engine, "journal_mode") == "wal"
            assert await pragma(engine, "synchronous") == value
            assert await pragma(engine, "foreign_keys") == 1
            assert int(str(await pragma(engine, "busy_timeout"))) >= 1000
    finally:
        await store.close()


async def test_default_synchronous_is_full(sqlite_store: Store) -> None:
    assert await pragma(sqlite_store.write_engine, "synchronous") == 2


async def test_invalid_synchronous_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        await open_store(f"sqlite:///{tmp_path / 'p.db'}", sqlite_synchronous="SOMETIMES")


async def test_write_transactions_take_the_write_lock_at_begin(sqlite_store: Store) -> None:
    path = sqlite_store.write_engine.url.database
    assert path
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        async with sqlite_store.write_engine.begin() as conn:
            await conn.exec_driver_sql("SELECT 1")  # a read only: DEFERRED would lock nothing
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again after commit
        other.execute("ROLLBACK")
        # reads do not block writers (WAL, deferred read transactions)
        async with sqlite_store.read_engine.begin() as conn:
            await conn.exec_driver_sql("SELECT count(*) FROM jobs")
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


async def test_relative_path_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///rel.db")
    try:
        await store.insert_jobs([new_job()])
    finally:
        await store.close()
    assert (tmp_path / "rel.db").exists()


async def test_absolute_path_url(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "abs.db"
    path.parent.mkdir()
    url = "sqlite:///" + str(path)  # sqlite:////abs/... : four slashes
    assert url.startswith("sqlite:////")
    await (await open_store(url)).close()
    assert path.exists()


async def test_in_memory_database_is_one_database(tmp_path: Path) -> None:
    store = await open_store("sqlite://")
    try:
        [(job, _)] = await store.insert_jobs([new_job()])
        assert await store.get_job(job.id) == job
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "driver", "settings"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite", {}),
        ("sqlite:////abs/x.db", "sqlite+aiosqlite", {}),
        ("postgresql://u@h:5432/db", "postgresql+asyncpg", {}),
        ("postgres://u:pw@h/db", "postgresql+asyncpg", {}),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg", {}),
        (
            "postgresql://u@h/db?options=-c%20search_path%3Ds1%20-cstatement_timeout%3D5s",
            "postgresql+asyncpg",
            {"search_path": "s1", "statement_timeout": "5s"},
        ),
    ],
)
def test_url_mapping(url: str, driver: str, settings: dict[str, str]) -> None:
    parsed = parse_url(url)
    sa_url, server_settings = parsed.url, parsed.server_settings
    assert sa_url.drivername == driver
    assert "options" not in sa_url.query
    assert server_settings == settings


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "postgresql://h/db?options=x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(StorageUrlError):
        parse_url(url)


@pytest.mark.parametrize("query", ["timeout=5", "mode=ro&uri=true", "foo=1"])
def test_a_sqlite_url_takes_no_parameters(query: str) -> None:
    # the driver would ignore most of them without a word; the server sets SQLite's own
    with pytest.raises(StorageUrlError, match="a SQLite URL takes no parameters"):
        parse_url(f"sqlite:///x.db?{query}")


async def test_string_filters_do_not_stop_at_nul(sqlite_store: Store) -> None:
    # Rows written before the API refused U+0000: SQLite's json_extract cuts at it, so
    # "acme\u0000x" once matched a filter for "acme" (and a bulk cancel took it along).
    [(job, _)] = await sqlite_store.insert_jobs(
        [new_job(labels={"k": "acme\x00x"}, payload={"c": "acme\x00x"})]
    )
    assert await sqlite_store.list_jobs(JobFilter(labels=(("k", "acme"),)), limit=10) == []
    assert await sqlite_store.list_jobs(JobFilter(payload=(("c", "acme"),)), limit=10) == []
    found = await sqlite_store.list_jobs(JobFilter(labels=(("k", "acme\x00x"),)), limit=10)
    assert [j.id for j in found] == [job.id]
