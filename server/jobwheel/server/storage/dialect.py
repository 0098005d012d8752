"""Everything that differs between SQLite and PostgreSQL, and nothing else.

The store is written once against SQLAlchemy Core; it asks a `Dialect` for capabilities and for
the few expressions that cannot be spelled portably (JSON look-ups, conflict-ignoring inserts,
the migration lock).
"""

from __future__ import annotations

import json
import secrets
import shlex
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jobwheel.server.storage.schema import jobs
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    String,
    Table,
    and_,
    cast,
    event,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

SelectT = TypeVar("SelectT", bound=Select[Any])
# the LISTEN/NOTIFY channel of event log appends
NOTIFY_CHANNEL = "jobwheel_events"
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Page cache per connection, KiB. The default 2 MiB thrashes once the jobs indexes outgrow it
# (random uuid4 ids: insert rate halves at ~200k jobs); the writer touches the most pages.
SQLITE_WRITER_CACHE_KIB = 64 * 1024
SQLITE_READER_CACHE_KIB = 16 * 1024
# Writers queue for the single SQLite write connection; under a burst that can take a while.
SQLITE_WRITER_WAIT_S = 300.0
PG_CONNECT_TIMEOUT_S = 5.0
# Arbitrary constant key for pg_advisory_xact_lock: "jw" + "migr" in ASCII.
MIGRATION_LOCK_KEY = 0x6A77_6D69_6772


class StorageUrlError(ValueError):
    """The database URL names no supported backend or is malformed."""


# The one JSON encoding for stored documents: compact, keys sorted (so equal documents are equal
# text, which SQLite's nested-value comparison relies on). A shared encoder: json.dumps with
# options builds a new one per call, which shows up at 50k+ rows/s.
dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


class Dialect:
    """What the store asks of a backend: capabilities, and the statements that differ."""

    name: str  # "sqlite" | "postgresql": for messages; behaviour follows the members below
    # One writer at a time (SQLite): write transactions start with BEGIN IMMEDIATE on a
    # dedicated connection, so read-then-write inside a transaction is race free.
    single_writer: bool
    # Transaction-scoped advisory locks (pg_advisory_xact_lock).
    advisory_locks: bool
    # LISTEN/NOTIFY for cross-process wake-ups.
    notify: bool
    # Largest number of bind parameters we put in one IN (...) list.
    max_in_list: int = 1000
    # Array parameters (unnest): a batch of rows is one statement instead of executemany.
    array_params: bool = False

    # -- statements ----------------------------------------------------------------------------

    async def insert_jobs(
        self, conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> Sequence[int | None]:
        """Insert job rows (values for `columns`, which start with "id") in one statement.

        Returns each row's seq, or None where the row was skipped because its idempotency key
        is taken (the caller then looks up the owner).
        """
        raise NotImplementedError

    def insert_ignore(self, table: Table, key: str) -> Any:
        """INSERT that does nothing when a row with the same `key` exists."""
        raise NotImplementedError

    def migration_lock(self) -> Any | None:
        """A statement that serializes concurrent migrations until the transaction ends."""
        return None

    def lock_rows(self, stmt: SelectT, *, skip_locked: bool = False) -> SelectT:
        """`stmt` (a SELECT) locking the rows it reads until commit, or skipping rows another
        transaction holds (`skip_locked`): for concurrent claims across processes. Where
        there is one writer (SQLite), the write transaction already excludes the others."""
        return stmt

    async def events_appended(self, conn: AsyncConnection, revision: int) -> None:
        """Tells other processes, at commit, that the event log grew to `revision`."""

    async def consistent_reads(self, conn: AsyncConnection) -> AsyncConnection:
        """`conn` with every statement of its next transaction reading one snapshot."""
        return conn  # a SQLite read transaction is one snapshot already

    # -- JSON document filters -----------------------------------------------------------------

    def json_field_equals(
        self, doc: ColumnElement[Any], key: str, value: Any
    ) -> ColumnElement[bool]:
        """Top-level `key` of the JSON text `doc` is present and equal to `value`.

        Scalars compare by JSON type and value (true is not 1, "1" is not 1); objects and
        arrays compare as whole documents.
        """
        raise NotImplementedError


class SqliteDialect(Dialect):
    name = "sqlite"
    single_writer = True
    advisory_locks = False
    notify = False

    async def insert_jobs(
        self, conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> Sequence[int | None]:
        return await _sqlite_insert_jobs(conn, columns, rows)

    def insert_ignore(self, table: Table, key: str) -> Any:
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])

    def json_field_equals(
        self, doc: ColumnElement[Any], key: str, value: Any
    ) -> ColumnElement[bool]:
        return _sqlite_field_equals(doc, key, value)


class PostgresDialect(Dialect):
    name = "postgresql"
    single_writer = False
    advisory_locks = True
    notify = True
    array_params = True

    async def insert_jobs(
        self, conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> Sequence[int | None]:
        # insertmanyvalues: multi-row VALUES ... RETURNING, a few round trips per batch.
        stmt = postgresql.insert(jobs).on_conflict_do_nothing(index_elements=["idempotency_key"])
        params = [dict(zip(columns, row, strict=True)) for row in rows]
        result = await conn.execute(stmt.returning(jobs.c.id, jobs.c.seq), params)
        seq_by_id: dict[str, int] = {r.id: r.seq for r in result}
        return [seq_by_id.get(row[0]) for row in rows]

    def insert_ignore(self, table: Table, key: str) -> Any:
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])

    def migration_lock(self) -> Any | None:
        return select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY))

    def lock_rows(self, stmt: SelectT, *, skip_locked: bool = False) -> SelectT:
        return stmt.with_for_update(skip_locked=skip_locked)

    async def events_appended(self, conn: AsyncConnection, revision: int) -> None:
        # delivered at commit: other replicas' tailers read the new revisions at once; the
        # payload names the writing engine, whose own process hands its events over itself
        payload = f"{revision} {notify_token(conn.sync_engine)}"
        await conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, payload)))

    async def consistent_reads(self, conn: AsyncConnection) -> AsyncConnection:
        return await conn.execution_options(isolation_level="REPEATABLE READ")

    def json_field_equals(
        self, doc: ColumnElement[Any], key: str, value: Any
    ) -> ColumnElement[bool]:
        return _pg_field_equals(doc, key, value)


SQLITE: Dialect = SqliteDialect()
POSTGRESQL: Dialect = PostgresDialect()
_BY_SQLALCHEMY_NAME = {"sqlite": SQLITE, "postgresql": POSTGRESQL}


_NOTIFY_TOKENS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def notify_token(engine: Engine) -> str:
    """A random name of `engine` for the payload of its event notifications (the last word),
    so that a listener can tell its own process's appends from other replicas'."""
    return _NOTIFY_TOKENS.setdefault(engine, secrets.token_hex(8))


def dialect_of(conn: AsyncConnection) -> Dialect:
    """The Dialect of a connection (for functions handed only a connection)."""
    return _BY_SQLALCHEMY_NAME[conn.dialect.name]


def lock_file_of(url: URL) -> Path | None:
    """The lock file that keeps a second server off a SQLite database file; None for other
    databases (and in-memory SQLite), which need none."""
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:"):
        return Path(database + ".lock")
    return None


async def _sqlite_insert_jobs(
    conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> list[int]:
    # The caller holds the only write lock and has excluded taken keys, so nothing conflicts.
    # A bare driver executemany (one thread hop, no per-row SQLAlchemy parameter processing)
    # is markedly faster than INSERT ... RETURNING through SQLAlchemy.
    max_seq = select(func.coalesce(func.max(jobs.c.seq), 0))
    before: int = (await conn.execute(max_seq)).scalar_one()
    placeholders = ",".join("?" * len(columns))
    sql = f"INSERT INTO {jobs.name} ({','.join(columns)}) VALUES ({placeholders})"
    await conn.exec_driver_sql(sql, rows)
    after: int = (await conn.execute(max_seq)).scalar_one()
    if after - before == len(rows):
        # Each row took max(seq) + 1 in turn, so the seqs are consecutive in input order.
        return list(range(before + 1, after + 1))
    # Gaps (AUTOINCREMENT skips the seqs of deleted newest rows): read them back.
    result = await conn.execute(select(jobs.c.id, jobs.c.seq).where(jobs.c.seq > before))
    seq_by_id: dict[str, int] = {r.id: r.seq for r in result}
    return [seq_by_id[row[0]] for row in rows]


def _pg_field_equals(doc: ColumnElement[Any], key: str, value: Any) -> ColumnElement[bool]:
    jdoc = cast(doc, postgresql.JSONB)
    if isinstance(value, dict | list):
        # @> would also accept a superset of a nested value; equality keeps SQLite's semantics.
        got = jdoc.op("->")(literal(key, String))
        return got.op("=", return_type=Boolean)(cast(literal(dumps(value)), postgresql.JSONB))
    fragment = cast(literal(dumps({key: value})), postgresql.JSONB)
    return jdoc.op("@>", return_type=Boolean)(fragment)


def _sqlite_json_type(value: Any) -> tuple[str, ...]:
    if value is None:
        return ("null",)
    if value is True:
        return ("true",)
    if value is False:
        return ("false",)
    if isinstance(value, int | float):
        return ("integer", "real")
    if isinstance(value, str):
        return ("text",)
    if isinstance(value, dict):
        return ("object",)
    if isinstance(value, list):
        return ("array",)
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _sqlite_field_equals(doc: ColumnElement[Any], key: str, value: Any) -> ColumnElement[bool]:
    types = _sqlite_json_type(value)
    if value is None or isinstance(value, bool):
        compare: Any = None  # the type alone decides
    elif isinstance(value, dict | list):
        compare = func.json(literal(dumps(value)))  # json_extract yields minified text
    else:
        compare = literal(value)
    if '"' in key:
        # A JSON path cannot quote '"' in SQLite; walk the top-level members instead.
        each = func.json_each(doc).table_valued("key", "type", "value")
        conds = [each.c.key == key, each.c.type.in_(types)]
        if compare is not None:
            conds.append(each.c.value == compare)
        return select(literal(1)).select_from(each).where(*conds).exists()
    path = f'$."{key}"'
    typed = func.json_type(doc, path).in_(types)
    if compare is None:
        return typed
    if isinstance(value, str):
        # json_extract cuts a string at U+0000 ("acme\u0000x" would equal "acme"); `->` gives
        # the member's JSON text, which the one encoder (`dumps`) made: equal strings, equal text.
        return and_(typed, doc.op("->")(literal(path)) == literal(dumps(value)))
    return and_(typed, func.json_extract(doc, path) == compare)


# -- engines -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Engines:
    dialect: Dialect
    write: AsyncEngine
    read: AsyncEngine  # the same object as `write` unless the backend has a single writer

    async def dispose(self) -> None:
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()


def parse_url(url: str) -> tuple[Dialect, URL, dict[str, str]]:
    """Map a user URL to (dialect, async SQLAlchemy URL, PostgreSQL server settings).

    PostgreSQL accepts libpq's `options=-c name=value ...` (e.g. a search_path).
    """
    try:
        u = make_url(url)
    except Exception as exc:
        raise StorageUrlError(f"malformed database URL {url!r}: {exc}") from exc
    backend = u.get_backend_name()
    if backend == "sqlite":
        return SQLITE, u.set(drivername="sqlite+aiosqlite"), {}
    if backend in ("postgresql", "postgres"):
        settings: dict[str, str] = {}
        options = u.query.get("options")
        if options is not None:
            settings = _parse_pg_options(options if isinstance(options, str) else options[-1])
            u = u.difference_update_query(["options"])
        return POSTGRESQL, u.set(drivername="postgresql+asyncpg"), settings
    raise StorageUrlError(f"unsupported database URL scheme {u.drivername!r} (sqlite, postgresql)")


def _parse_pg_options(options: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    words = iter(shlex.split(options))
    for word in words:
        item = next(words, "") if word == "-c" else word.removeprefix("-c")
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise StorageUrlError(f"unsupported PostgreSQL options {options!r}")
        settings[name] = value
    return settings


def create_engines(url: str, *, sqlite_synchronous: str = "FULL") -> Engines:
    dialect, sa_url, server_settings = parse_url(url)
    if dialect is POSTGRESQL:
        # a host that does not answer fails a connection in seconds, not asyncpg's minute
        connect_args: dict[str, Any] = {"timeout": PG_CONNECT_TIMEOUT_S}
        if server_settings:
            connect_args["server_settings"] = server_settings
        engine = create_async_engine(
            sa_url, pool_size=10, max_overflow=10, connect_args=connect_args
        )
        return Engines(dialect, engine, engine)

    sync = sqlite_synchronous.upper()
    if sync not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}, got {sync!r}")
    database = sa_url.database or ""
    if database in ("", ":memory:"):
        # One shared connection, or every connection would see its own empty database.
        engine = create_async_engine(sa_url, poolclass=StaticPool)
        _sqlite_setup(engine, sync, SQLITE_WRITER_CACHE_KIB, begin="BEGIN IMMEDIATE")
        return Engines(dialect, engine, engine)
    write = create_async_engine(
        sa_url, pool_size=1, max_overflow=0, pool_timeout=SQLITE_WRITER_WAIT_S
    )
    _sqlite_setup(write, sync, SQLITE_WRITER_CACHE_KIB, begin="BEGIN IMMEDIATE")
    read = create_async_engine(sa_url, pool_size=4, max_overflow=4)
    _sqlite_setup(read, sync, SQLITE_READER_CACHE_KIB, begin="BEGIN")
    return Engines(dialect, write, read)


def _sqlite_setup(engine: AsyncEngine, synchronous: str, cache_kib: int, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # busy_timeout first: switching a new file to WAL waits for other connections' locks
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA cache_size=-{cache_kib}")  # negative: KiB, not pages
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: no deadlock-prone lock upgrade mid-transaction.
        conn.exec_driver_sql(begin)
