"""Everything that differs between SQLite and PostgreSQL, and nothing else.

The store is written once against SQLAlchemy Core; it asks a `Dialect` for capabilities and for
the few expressions that cannot be spelled portably (JSON look-ups, conflict-ignoring inserts,
the migration lock).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import secrets
import sqlite3
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import orjson
from jobwheel.server.storage.bulk_writes import (
    EVENT_COLUMNS,
    PG_COPY_MIN_ROWS,
    columns_of,
    in_sqlite_thread,
    pg_copy_jobs,
    pg_unnest_insert,
    sqlite_append_events,
    sqlite_insert_jobs,
    wrapped_error,
)
from jobwheel.server.storage.driver import to_completion
from jobwheel.server.storage.pg_keepalive import Keepalive, set_keepalive, take_keepalive
from jobwheel.server.storage.pg_url import take_parameters, unreadable_file
from jobwheel.server.storage.schema import KEYED, jobs
from jobwheel.server.storage.sqlite_cursor import one_hop
from jobwheel.server.storage.wal_checkpoints import WRITER_AUTOCHECKPOINT_PAGES, WalCheckpointer
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
    text,
)
from sqlalchemy import util as sa_util
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

SelectT = TypeVar("SelectT", bound=Select[Any])
# runs a coroutine from SQLAlchemy's synchronous event hooks (its name before 2.1: await_only)
_await: Callable[[Any], Any] = getattr(sa_util, "await_", None) or sa_util.await_only
# The LISTEN/NOTIFY channel of event log appends and settings changes (an SQL expression),
# one per schema (the search_path's first, which holds the tables), so that deployments sharing
# a database do not wake each other: "jobwheel_events" in public, "jobwheel_events.<schema>"
# elsewhere, or the schema's md5 where the name would pass PostgreSQL's 63-byte limit.
# Listeners also listen on NOTIFY_CHANNEL, where earlier versions tell of their appends in
# every schema (a rolling upgrade).
NOTIFY_CHANNEL = "jobwheel_events"
NOTIFY_CHANNEL_SQL = (
    f"CASE WHEN current_schema() = 'public' THEN '{NOTIFY_CHANNEL}' "
    f"WHEN octet_length(current_schema()) <= 47 THEN '{NOTIFY_CHANNEL}.' || current_schema() "
    f"ELSE '{NOTIFY_CHANNEL}.' || md5(current_schema()) END"
)
# the payload, on that channel, of a change to queue settings or event subscriptions
SETTINGS_CHANGED = "settings"
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Page cache per connection, KiB. The default 2 MiB thrashes once the jobs indexes outgrow it
# (random uuid4 ids: insert rate halves at ~200k jobs); the writer touches the most pages.
SQLITE_WRITER_CACHE_KIB = 64 * 1024
SQLITE_READER_CACHE_KIB = 16 * 1024
# Writers queue for the single SQLite write connection; under a burst that can take a while.
SQLITE_WRITER_WAIT_S = 300.0
# Readers of a SQLite file: the store holds up to SQLITE_READERS_KEPT open between reads and
# opens more, up to SQLITE_READERS_MAX at once, under a burst (held_connections.py).
SQLITE_READERS_KEPT = 4
SQLITE_READERS_MAX = 8
SQLITE_READER_WAIT_S = 30.0  # as long as SQLAlchemy's pool lets a check-out wait
# PostgreSQL connections of a server: at most PG_POOL_MAX, PG_POOL_KEPT of them open between
# transactions. The store holds all but PG_POOL_MAX - PG_HELD_MAX (held_connections.py); those
# are left to connections held for long (LISTEN, the leader's lock).
PG_POOL_KEPT = 10
PG_POOL_MAX = 20
PG_HELD_MAX = 18
PG_WAIT_S = 30.0  # as long as SQLAlchemy's pool lets a check-out wait
DISPOSE_WAIT_S = 1.5  # closing the connections at shutdown (Engines.dispose)
# Enqueues run on a connection of their own whose statements keep one generic plan
# (plan_cache_mode, PostgreSQL 12 and later). Under the default a prepared statement is planned
# again at each execution while its generic plan looks costlier than the plans for the values
# given, and an enqueue's estimates hang on the batch's size (a generic plan assumes 1,000
# rows from generate_series, a plan for one job one): PostgreSQL spent 1.07 ms of CPU on a
# one-job enqueue, planning half of it, and 0.53 ms with the generic plan. Reads keep the
# default: a filter such as an id prefix (LIKE) is only planned well with its value.
PG_ENQUEUE_SETTINGS = {"plan_cache_mode": "force_generic_plan"}
# Arbitrary constant key for pg_advisory_xact_lock: "jw" + "migr" in ASCII.
MIGRATION_LOCK_KEY = 0x6A77_6D69_6772
# The class of the idempotency keys' locks, pg_advisory_xact_lock(class, bucket): a pair of
# 32-bit keys, a space apart from the 64-bit keys of the migration and leader locks.
KEY_LOCK_CLASS = 0x6A77_6B79  # "jwky"
# Keys share this many locks (by hash): a lock per key would fill PostgreSQL's shared lock
# table (max_locks_per_transaction x connections, 6,400 by default) with a few batches of
# 10,000 keys. The cost: keyed batches from several replicas take turns from their look-up
# on, not only at the event log's head row (a replica's enqueues go one batch at a time anyway).
KEY_LOCK_BUCKETS = 16


_PG_LOCK_JOBS = f"SELECT seq FROM {jobs.name} WHERE id = ANY($1::varchar[]) ORDER BY seq FOR UPDATE"
# taken in bucket order: the rows come out of the ordered subquery as sorted
_PG_LOCK_KEYS = (
    "SELECT pg_advisory_xact_lock($1::int4, b) FROM (SELECT DISTINCT"
    f" hashtext(k) & {KEY_LOCK_BUCKETS - 1} AS b FROM unnest($2::text[]) AS k ORDER BY b)"
    " AS ordered"
)


class StorageUrlError(ValueError):
    """The database URL names no supported backend or is malformed."""


# The one JSON encoding for stored documents: compact, keys sorted (so equal documents are equal
# text, which SQLite's nested-value comparison relies on). A shared encoder: json.dumps with
# options builds a new one per call, which shows up at 50k+ rows/s.
dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode

# 19 digits in a row: maybe an int past 64 bits, which orjson would read as a float
_LONG_DIGITS = re.compile(r"\d{19}")


def loads(text: str) -> Any:
    """json.loads(`text`) for stored documents, about 7x faster on the usual small ones: orjson
    reads them where it gives the same value. It refuses NaN, Infinity, 1e400 and lone
    surrogates, and reads an int past 64 bits as a float: a text it refuses, or one holding
    19 digits in a row, goes to json.loads. Raises json.JSONDecodeError on malformed text."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def dumps_floatless(value: Any) -> str:
    """dumps(`value`) for a document that holds no float, ~10x faster: orjson spells strings,
    ints and the key order as dumps does (floats it may spell otherwise, 1e-07 as 1e-7).
    What orjson refuses (ints beyond 64 bits, say) goes to dumps."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError
        return dumps(value)


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
    # A search by id prefix gains from an explicit range over the id index when few ids
    # have the prefix (SQLite's LIKE does not use the index).
    id_prefix_range: bool = False

    # -- statements ----------------------------------------------------------------------------

    async def insert_jobs(
        self, conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> Sequence[int | None]:
        """Insert job rows (values for `columns`, which start with "id") in one statement.

        Returns each row's seq, or None where the row was skipped because its idempotency key
        is taken (the caller then looks up the owner).
        """
        raise NotImplementedError

    async def append_event_rows(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> int:
        """Takes the next len(`rows`) revisions from the head row (locking it until commit),
        inserts the rows ((job_id, type, time, job snapshot) each) under them in order, tells
        other processes at commit (see `notify`), and returns the last revision."""
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

    async def lock_jobs(self, conn: AsyncConnection, job_ids: Sequence[str]) -> None:
        """Locks the rows of `job_ids` until commit, in seq order: the order bulk actions lock
        rows in, so that a write naming jobs by id cannot deadlock with one. Where there is
        one writer (SQLite), the write transaction already excludes the others."""

    async def lock_keys(self, conn: AsyncConnection, keys: Sequence[str]) -> None:
        """Locks idempotency `keys` until commit, all in one order (by hash, in
        KEY_LOCK_BUCKETS buckets: at most that many locks), before a write looks them up and
        inserts jobs under them: two batches that share keys take turns, where each inserting
        its rows in its own order could hold a key the other waits for (a deadlock on the
        unique index). Where there is one writer (SQLite), the write transaction already
        excludes the others."""

    async def consistent_reads(self, conn: AsyncConnection) -> AsyncConnection:
        """`conn` with every statement of its next transaction reading one snapshot."""
        return conn  # a SQLite read transaction is one snapshot already

    def text_bytes(self, column: Any) -> ColumnElement[int]:
        """The stored size of a text column (NULL for NULL): bytes, or characters where the
        backend counts no bytes cheaply (SQLite)."""
        return func.length(column)

    # -- JSON document filters -----------------------------------------------------------------

    def json_field_equals(
        self, doc: ColumnElement[Any], key: str, value: Any
    ) -> ColumnElement[bool]:
        """Top-level `key` of the JSON text `doc` is present and equal to `value`.

        Scalars compare by JSON type and value (true is not 1, "1" is not 1); objects and
        arrays compare as whole documents.
        """
        raise NotImplementedError

    def driver_idle(self, driver: Any) -> bool:
        """`driver`, the driver's own connection, is open and out of any transaction."""
        raise NotImplementedError

    async def end_driver_transaction(self, driver: Any) -> None:
        """Rolls back a transaction left open on `driver` (one a statement sent below
        SQLAlchemy began and did not end)."""
        raise NotImplementedError


class SqliteDialect(Dialect):
    name = "sqlite"
    single_writer = True
    advisory_locks = False
    notify = False
    id_prefix_range = True

    def driver_idle(self, driver: Any) -> bool:
        return driver._conn is not None and not driver._conn.in_transaction

    async def end_driver_transaction(self, driver: Any) -> None:
        if driver._conn is not None and driver._conn.in_transaction:
            await driver._execute(driver._conn.rollback)

    async def insert_jobs(
        self, conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> Sequence[int | None]:
        placeholders = ",".join("?" * len(columns))
        sql = f"INSERT INTO {jobs.name} ({','.join(columns)}) VALUES ({placeholders})"
        return await in_sqlite_thread(conn, sqlite_insert_jobs, sql, rows)

    async def append_event_rows(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> int:
        return await in_sqlite_thread(conn, sqlite_append_events, rows)

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

    # asyncpg takes a Transaction as the connection's current one before its BEGIN is sent;
    # one whose start() was cancelled stays so (`_top_xact`), and the next transaction would
    # start as a nested one: a SAVEPOINT, refused outside a transaction block

    def driver_idle(self, driver: Any) -> bool:
        return not driver.is_closed() and not driver.is_in_transaction() and not driver._top_xact

    async def end_driver_transaction(self, driver: Any) -> None:
        if not driver.is_closed() and (driver._top_xact or driver.is_in_transaction()):
            # sent once a cancelled statement has ended (asyncpg waits for that): a cancelled
            # BEGIN may still open its transaction (ROLLBACK outside one only warns)
            await driver.execute("ROLLBACK")
            driver._top_xact = None

    def text_bytes(self, column: Any) -> ColumnElement[int]:
        return func.octet_length(column)

    async def insert_jobs(
        self, conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> Sequence[int | None]:
        key_at = columns.index("idempotency_key")
        if len(rows) >= PG_COPY_MIN_ROWS and all(row[key_at] is None for row in rows):
            return await pg_copy_jobs(conn, columns, rows)
        # One statement whatever the batch size: each column travels as one array parameter
        # and unnest() turns them back into rows (a prepared statement asyncpg caches; no
        # per-row SQL, parameters or round trips).
        sql = pg_unnest_insert(
            jobs,
            columns,
            f"ON CONFLICT (idempotency_key) WHERE {KEYED} DO NOTHING RETURNING id, seq",
        )
        result = await conn.exec_driver_sql(sql, tuple(columns_of(rows, len(columns))))
        returned: Sequence[Any] = result.all()
        seq_by_id: dict[str, int] = {job_id: seq for job_id, seq in returned}
        return [seq_by_id.get(row[0]) for row in rows]

    async def append_event_rows(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> int:
        # One round trip: take the revisions, insert the rows, notify (delivered at commit:
        # other replicas' tailers read the new revisions at once; the payload names the
        # writing engine, whose own process hands its events over itself).
        columns = columns_of(rows, len(EVENT_COLUMNS) - 1)
        token = notify_token(conn.sync_engine)
        result = await conn.exec_driver_sql(_PG_APPEND_EVENTS, (len(rows), *columns, token))
        return int(result.scalar_one())

    def insert_ignore(self, table: Table, key: str) -> Any:
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])

    def migration_lock(self) -> Any | None:
        return select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY))

    def lock_rows(self, stmt: SelectT, *, skip_locked: bool = False) -> SelectT:
        return stmt.with_for_update(skip_locked=skip_locked)

    async def lock_jobs(self, conn: AsyncConnection, job_ids: Sequence[str]) -> None:
        if job_ids:
            await conn.exec_driver_sql(_PG_LOCK_JOBS, (list(job_ids),))

    async def lock_keys(self, conn: AsyncConnection, keys: Sequence[str]) -> None:
        if keys:
            await conn.exec_driver_sql(_PG_LOCK_KEYS, (KEY_LOCK_CLASS, list(keys)))

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
    token = _NOTIFY_TOKENS.get(engine)
    if token is None:  # drawn once: every write transaction that appends events asks
        token = _NOTIFY_TOKENS[engine] = secrets.token_hex(8)
    return token


async def notify_settings_changed(conn: AsyncConnection) -> None:
    """Tells the other replicas, at commit, that queue settings or event subscriptions
    changed (PostgreSQL; nothing to tell elsewhere)."""
    if dialect_of(conn).notify:
        await conn.execute(
            text(f"SELECT pg_notify({NOTIFY_CHANNEL_SQL}, :payload)"),
            {"payload": SETTINGS_CHANGED},
        )


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


# $1: how many; $2..$5: job_id, type, time and job arrays; $6: the writer's notify_token. The
# data-modifying CTEs run whatever the SELECT reads; pg_notify's message ("revision token") is
# delivered at commit.
_PG_APPEND_EVENTS = f"""
WITH head AS (
    UPDATE event_head SET revision = revision + $1::int8 WHERE id = 1 RETURNING revision
), added AS (
    INSERT INTO events (revision, job_id, type, time, job)
    SELECT head.revision - $1::int8 + t.ord, t.job_id, t.type, t.time, t.job
    FROM head, unnest($2::text[], $3::text[], $4::int8[], $5::text[])
        WITH ORDINALITY AS t(job_id, type, time, job, ord)
    ORDER BY t.ord
)
SELECT revision, pg_notify({NOTIFY_CHANNEL_SQL}, revision::text || ' ' || $6::text) FROM head
"""


async def pg_append_event_rows(db: Any, rows: list[tuple[Any, ...]], token: str) -> int:
    """PostgresDialect.append_event_rows on asyncpg's connection `db`, in the caller's
    transaction (storage.pg_cycle); `token`: the writing engine's notify_token."""
    columns = columns_of(rows, len(EVENT_COLUMNS) - 1)
    return int(await db.fetchval(_PG_APPEND_EVENTS, len(rows), *columns, token))


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
    if dumps(key) != f'"{key}"':
        # A key the stored text escapes ('"', '\\', control characters): SQLite's path labels
        # are matched against the escaped text, and cannot quote '"'; walk the members instead.
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
    # a SQLite file's checkpoints (open_store starts it)
    checkpointer: WalCheckpointer | None = None
    # PostgreSQL: one connection for enqueues, its statements on generic plans
    # (PG_ENQUEUE_SETTINGS); None elsewhere, where enqueues take `write`
    enqueue: AsyncEngine | None = None

    async def dispose(self) -> None:
        """Closes the engines' connections, waiting DISPOSE_WAIT_S at most: closing a
        PostgreSQL connection waits for the server's end of it, which a network dropping
        packets never brings; past that the connections are let go unclosed (the process
        is ending: the system closes them)."""
        if self.checkpointer is not None:  # waits for a checkpoint under way: off the loop
            await asyncio.to_thread(self.checkpointer.stop)
        engines = [self.write]
        if self.read is not self.write:
            engines.append(self.read)
        if self.enqueue is not None:
            engines.append(self.enqueue)
        closing = [asyncio.ensure_future(engine.dispose()) for engine in engines]
        done, stuck = await asyncio.wait(closing, timeout=DISPOSE_WAIT_S)
        if stuck:  # cancelled, not awaited: a pool's close goes on to its next connection
            log.warning(
                "the database's connections did not close within %g s; let go unclosed",
                DISPOSE_WAIT_S,
            )
            for task in stuck:
                task.cancel()
            for engine in engines:
                await engine.dispose(close=False)
        for task in done:
            task.result()


class ParsedUrl(NamedTuple):
    dialect: Dialect
    url: URL  # SQLAlchemy's async driver, without what asyncpg does not take
    server_settings: dict[str, str]  # PostgreSQL's: `options`, application_name
    keepalive: Keepalive | None  # PostgreSQL's TCP settings (pg_keepalive.py)
    # PostgreSQL's extra asyncpg.connect keywords: the TLS parameters' DSN, the timeout
    connect_args: dict[str, Any]


def parse_url(url: str) -> ParsedUrl:
    """Map a user URL to its dialect, SQLAlchemy URL and PostgreSQL connection settings.

    PostgreSQL takes libpq's parameters that pg_url.py and pg_keepalive.py read (TLS,
    `options=-c name=value ...`, application_name, connect_timeout, keepalives); SQLite takes
    none. Raises StorageUrlError.
    """
    try:
        u = make_url(url)
    except Exception as exc:
        # not the text itself: it may hold a password
        raise StorageUrlError(f"malformed database URL: {exc}") from exc
    backend = u.get_backend_name()
    if backend == "sqlite":
        if u.query:
            # the server sets SQLite's settings itself; the driver would ignore most of these
            raise StorageUrlError(
                f"database URL: a SQLite URL takes no parameters, got {sorted(u.query)[0]!r} "
                "(the server sets SQLite's settings; see --sqlite-synchronous)"
            )
        return ParsedUrl(SQLITE, u.set(drivername="sqlite+aiosqlite"), {}, None, {})
    if backend in ("postgresql", "postgres"):
        try:
            u, connection = take_parameters(u)
            u, keepalive = take_keepalive(u)
        except ValueError as exc:
            raise StorageUrlError(f"database URL: {exc}") from exc
        return ParsedUrl(
            POSTGRESQL,
            u.set(drivername="postgresql+asyncpg"),
            connection.server_settings,
            keepalive,
            connection.connect_args,
        )
    raise StorageUrlError(f"unsupported database URL scheme {u.drivername!r} (sqlite, postgresql)")


def create_engines(url: str, *, sqlite_synchronous: str = "FULL") -> Engines:
    dialect, sa_url, server_settings, keepalive, connect_args = parse_url(url)
    if dialect is POSTGRESQL:
        assert keepalive is not None
        problem = unreadable_file(connect_args)
        if problem is not None:
            raise StorageUrlError(problem)
        if server_settings:
            connect_args["server_settings"] = server_settings
        # the connection returned last goes out first: a quiet server keeps to one or two,
        # whose backends have read the catalog and prepared the statements (the first fire on
        # each connection of a new server took 20-40 ms, round-robin reached ten of them)
        engine = create_async_engine(
            sa_url,
            pool_size=PG_POOL_KEPT,
            max_overflow=PG_POOL_MAX - PG_POOL_KEPT,
            pool_use_lifo=True,
            connect_args=connect_args,
        )
        settings = {**server_settings, **PG_ENQUEUE_SETTINGS}
        enqueue = create_async_engine(
            sa_url,
            pool_size=1,
            max_overflow=0,
            connect_args={**connect_args, "server_settings": settings},
        )
        set_keepalive(engine, keepalive)
        set_keepalive(enqueue, keepalive)
        # one process, one name in its notifications, whichever engine writes
        _NOTIFY_TOKENS[enqueue.sync_engine] = notify_token(engine.sync_engine)
        return Engines(dialect, engine, engine, enqueue=enqueue)

    sync = sqlite_synchronous.upper()
    if sync not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}, got {sync!r}")
    database = sa_url.database or ""
    if database in ("", ":memory:"):
        # One shared connection, or every connection would see its own empty database.
        engine = create_async_engine(sa_url, poolclass=StaticPool, pool_reset_on_return=None)
        _sqlite_setup(engine, sync, SQLITE_WRITER_CACHE_KIB, begin="BEGIN IMMEDIATE")
        return Engines(dialect, engine, engine)
    # the store holds the one connection between its writes (held_connections.py); one more for
    # direct users of the engine (migrations, tests)
    write = create_async_engine(
        sa_url,
        pool_size=1,
        max_overflow=1,
        pool_timeout=SQLITE_WRITER_WAIT_S,
        pool_reset_on_return=None,  # see _on_reset
    )
    _sqlite_setup(
        write,
        sync,
        SQLITE_WRITER_CACHE_KIB,
        begin="BEGIN IMMEDIATE",
        autocheckpoint=WRITER_AUTOCHECKPOINT_PAGES,
    )
    read = create_async_engine(
        sa_url,
        pool_size=SQLITE_READERS_KEPT,
        max_overflow=SQLITE_READERS_MAX - SQLITE_READERS_KEPT,
        pool_reset_on_return=None,
    )
    _sqlite_setup(read, sync, SQLITE_READER_CACHE_KIB, begin="BEGIN")
    # the file (or URI) and options SQLAlchemy opens, for the checkpoints' own connection
    args, kwargs = write.sync_engine.dialect.create_connect_args(sa_url)
    checkpointer = WalCheckpointer(
        functools.partial(sqlite3.connect, *args, **kwargs), database, sync
    )
    return Engines(dialect, write, read, checkpointer)


def _sqlite_setup(
    engine: AsyncEngine,
    synchronous: str,
    cache_kib: int,
    *,
    begin: str,
    autocheckpoint: int | None = None,
) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        one_hop(dbapi_conn)  # a statement through SQLAlchemy: one hop (sqlite_cursor.py)
        # Take transaction control away from the driver so BEGIN is ours (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # busy_timeout first: switching a new file to WAL waits for other connections' locks
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA cache_size=-{cache_kib}")  # negative: KiB, not pages
        if autocheckpoint is not None:  # a thread checkpoints (wal_checkpoints.py)
            cur.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: no deadlock-prone lock upgrade mid-transaction.
        # Sent straight to the driver's thread: one hop, without SQLAlchemy's work for a
        # statement.
        driver = conn.connection.driver_connection
        try:
            # a cancelled caller waits for it too: queued, it would run after the connection
            # was handed on, in the next holder's way
            _await(to_completion(driver._execute(driver._conn.execute, begin)))
        except sqlite3.Error as exc:
            raise wrapped_error(begin, exc) from exc

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(_dbapi_conn: Any, record: Any, state: Any) -> None:
        # In place of the pool's unconditional ROLLBACK on every check-in (another hop): only
        # a transaction left open needs one.
        if state.transaction_was_reset or state.terminate_only or not state.asyncio_safe:
            return
        driver = record.driver_connection
        if driver is not None and driver._conn.in_transaction:
            _await(driver._execute(driver._conn.rollback))
