"""Bulk writes below SQLAlchemy's per-statement layer: the enqueue path's hot statements.

On SQLite, work runs on the driver's own connection in aiosqlite's thread, several statements
per hop; on PostgreSQL, a batch travels as one array parameter per column (unnest), one
statement and one round trip whatever its size, or, for jobs without idempotency keys, as
COPY (binary), which costs the server process a third of the CPU (no array encoding).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from jobwheel.server.storage.driver import driver_connection, to_completion
from jobwheel.server.storage.schema import jobs
from sqlalchemy import BigInteger, Boolean, Integer, String, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


async def in_sqlite_thread(conn: AsyncConnection, work: Callable[..., T], *args: Any) -> T:
    """Runs `work(sqlite3_connection, *args)` in the driver's thread, inside the transaction
    `conn` holds: a few statements cost one thread hop, where through SQLAlchemy each costs a
    hop of its own (sqlite_cursor.py), waiting for a turn of a busy event loop, and
    SQLAlchemy's work for a statement."""
    driver = await driver_connection(conn)
    try:
        # a cancelled caller waits for its work too: the connection must not be handed on
        # with the work still to run in the thread
        done: T = await to_completion(driver._execute(work, driver._conn, *args))
    except sqlite3.Error as exc:  # as SQLAlchemy would raise it (errors.py maps those)
        raise wrapped_error(getattr(work, "__name__", "sqlite"), exc) from exc
    return done


def in_write_transaction(db: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    """`work(db, *args)` in a write transaction of its own (BEGIN IMMEDIATE), committed when it
    returns, rolled back when it raises. In the driver's thread (see in_sqlite_thread), on a
    connection with no transaction open (Store._raw_write)."""
    db.execute("BEGIN IMMEDIATE")
    return and_commit(db, work, *args)


def begun(db: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    """The first part of a write transaction that spans hops: BEGIN IMMEDIATE, then
    `work(db, *args)`; rolled back if it raises, else left open for `and_commit`."""
    db.execute("BEGIN IMMEDIATE")
    try:
        return work(db, *args)
    except BaseException:
        roll_back(db)
        raise


def and_commit(db: sqlite3.Connection, work: Callable[..., T], *args: Any) -> T:
    """`work(db, *args)` in the write transaction open on `db`, then COMMIT; rolled back if
    either raises."""
    try:
        done = work(db, *args)
        db.execute("COMMIT")
    except BaseException:
        roll_back(db)
        raise
    return done


def roll_back(db: sqlite3.Connection) -> None:
    """Rolls back the transaction open on `db`, if any (in the driver's thread)."""
    if db.in_transaction:
        db.execute("ROLLBACK")


def wrapped_error(statement: str, exc: sqlite3.Error) -> Exception:
    """`exc` as the sqlalchemy.exc.DBAPIError subclass SQLAlchemy raises for it."""
    wrapped: Exception = sa_exc.DBAPIError.instance(statement, None, exc, sqlite3.Error)
    return wrapped


_MAX_SEQ = f"SELECT coalesce(max(seq), 0) FROM {jobs.name}"


def sqlite_insert_jobs(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> list[int]:
    """Inserts `rows` with `sql` (INSERT INTO jobs ... VALUES (?, ...)); returns each row's
    seq, in order. Runs in the driver's thread (see in_sqlite_thread)."""
    # The caller holds the only write lock and has excluded taken keys, so nothing conflicts.
    before: int = db.execute(_MAX_SEQ).fetchone()[0]
    db.executemany(sql, rows)
    after: int = db.execute(_MAX_SEQ).fetchone()[0]
    if after - before == len(rows):
        # Each row took max(seq) + 1 in turn, so the seqs are consecutive in input order.
        return list(range(before + 1, after + 1))
    # Gaps (AUTOINCREMENT skips the seqs of deleted newest rows): read them back.
    found = db.execute(f"SELECT id, seq FROM {jobs.name} WHERE seq > ?", (before,)).fetchall()
    seq_by_id: dict[str, int] = dict(found)
    return [seq_by_id[row[0]] for row in rows]


@functools.lru_cache(maxsize=64)
def sqlite_insert_shared(table: str, columns: Sequence[str], own: Sequence[str]) -> str:
    """INSERT INTO table (columns) SELECT ... FROM json_each(?1): one statement for every
    row. ?1 is one JSON array (see json_rows) of arrays of the `own` values, in their order in
    `columns`; each other column takes a parameter of its own (?2, ?3, ... in the order of
    `columns`: shared_params), one value for every row, so a row carries only what differs.
    The text depends on the columns alone: built once, and prepared once by the driver's
    statement cache."""
    names = ", ".join(columns)
    index = {name: i for i, name in enumerate(own)}
    values = []
    shared = 1
    for name in columns:
        if name in index:
            values.append(f"json_extract(value, '$[{index[name]}]')")
        else:
            shared += 1
            values.append(f"?{shared}")
    return (
        f"INSERT INTO {table} ({names}) SELECT {', '.join(values)} FROM json_each(?1) ORDER BY key"
    )


def shared_params(
    columns: Sequence[str], own: Sequence[str], shared: Sequence[Any]
) -> tuple[Any, ...]:
    """The parameters after ?1 of sqlite_insert_shared(_, `columns`, `own`): the values of
    `shared` (values for `columns`) of the columns not in `own`."""
    return tuple(value for name, value in zip(columns, shared, strict=True) if name not in own)


def json_rows(rows: list[tuple[Any, ...]]) -> str | None:
    """`rows` (of None, bool, int and str values) as the JSON array a sqlite_insert_shared
    statement binds, or None when a value holds U+0000 (which json_extract cuts off: such
    rows must be bound one by one). A statement per batch, not a step per row: each step of
    executemany hands the GIL back and forth, and while the event loop is busy each hand-back
    waits."""
    text = orjson.dumps(rows).decode()
    # orjson spells U+0000 so; the test also catches an escaped one in a document (harmless)
    return None if "\\u0000" in text else text


def sqlite_literal(value: bool | int | str | None) -> str:
    """`value` as an SQLite literal that stores what binding it would."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):  # bound as the integer 1 or 0
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQLite literal for {type(value).__name__}")


EVENT_COLUMNS = ("revision", "job_id", "type", "time", "job")
_SQLITE_TAKE_REVISIONS = (
    "UPDATE event_head SET revision = revision + ? WHERE id = 1 RETURNING revision"
)
_SQLITE_INSERT_EVENTS = f"INSERT INTO events ({','.join(EVENT_COLUMNS)}) VALUES (?,?,?,?,?)"


def sqlite_append_events(db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Takes the next len(`rows`) revisions and inserts the rows ((job_id, type, time, job
    snapshot) each) under them in order; returns the last one. In the driver's thread."""
    last: int = db.execute(_SQLITE_TAKE_REVISIONS, (len(rows),)).fetchall()[0][0]
    first = last - len(rows) + 1
    db.executemany(_SQLITE_INSERT_EVENTS, [(first + i, *row) for i, row in enumerate(rows)])
    return last


# ENQUEUED events of the jobs of seqs ?5..?6, read back from their rows: revision ?1 + seq,
# the snapshot that new_job_snapshots writes, its tail bound (see new_job_snapshot_tails);
# jobs without keys
_NEW_JOB_SNAPSHOT = (
    """'{"id":' || json_quote(id) || ',"idempotency_key":null,"labels":' || labels"""
    """ || ',"seq":' || seq || ?4"""
)
_SQLITE_INSERT_EVENTS_OF_JOBS = (
    f"INSERT INTO events ({','.join(EVENT_COLUMNS)}) SELECT ?1 + seq, id, ?2, ?3, "
    f"{_NEW_JOB_SNAPSHOT} FROM {jobs.name} WHERE seq BETWEEN ?5 AND ?6 ORDER BY seq"
)
# json_quote spells these as \u00XX, orjson some of them otherwise
_CONTROL_CHARS = re.compile("[\x00-\x1f]")


def events_of_new_jobs(ids: Sequence[str]) -> bool:
    """Whether sqlite_enqueue_json may build the events of jobs with these ids from their
    rows (see _SQLITE_INSERT_EVENTS_OF_JOBS)."""
    return _CONTROL_CHARS.search("".join(ids)) is None


def sqlite_enqueue_json(
    db: sqlite3.Connection,
    jobs_sql: str,
    jobs_params: tuple[Any, ...],
    tails: list[tuple[int, str]],
    event_type: str,
    now: int,
) -> tuple[int, int]:
    """Inserts jobs without idempotency keys (`jobs_sql`, a sqlite_insert_shared statement,
    with `jobs_params`: the rows, then shared_params) and their events (`tails`: see
    new_job_snapshot_tails) in a few statements whatever their number; returns (first seq,
    last revision). Runs in the driver's thread, in a write transaction."""
    count = sum(n for n, _ in tails)
    # The caller holds the only write lock and these jobs have no keys: nothing conflicts.
    # the cursor knows the last seq and the rows inserted: no statement (a GIL hand-off) more
    inserting = db.execute(jobs_sql, jobs_params)
    last_seq, inserted = inserting.lastrowid, inserting.rowcount
    if last_seq is None or inserted != count:
        raise RuntimeError(f"inserted {inserted} of {count} jobs")
    # one INSERT ... SELECT: AUTOINCREMENT gives its rows consecutive seqs, in order
    first_seq = last_seq - count + 1
    last: int = db.execute(_SQLITE_TAKE_REVISIONS, (count,)).fetchall()[0][0]
    offset = last - last_seq  # revision - seq
    seq = first_seq
    for n, tail in tails:
        db.execute(_SQLITE_INSERT_EVENTS_OF_JOBS, (offset, event_type, now, tail, seq, seq + n - 1))
        seq += n
    return first_seq, last


def columns_of(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of `width` values turned into `width` columns (the arrays unnest() takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def pg_array_type(column_type: Any) -> str:
    for sa_type, name in ((BigInteger, "int8"), (Integer, "int4"), (Boolean, "bool")):
        if isinstance(column_type, sa_type):
            return name
    assert isinstance(column_type, String), column_type  # Text too
    return "text"


@functools.lru_cache(maxsize=32)
def pg_unnest_insert(table: Table, columns: Sequence[str], tail: str) -> str:
    """INSERT INTO table (columns) SELECT FROM unnest($1::type[], ...), rows in array order."""
    # unbounded element types: an explicit cast to VARCHAR(n) would cut a long value, where
    # the assignment to the column refuses it
    arrays = ", ".join(
        f"${i}::{pg_array_type(table.c[name].type)}[]" for i, name in enumerate(columns, 1)
    )
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table.name} ({names}) SELECT {names} FROM unnest({arrays}) "
        f"WITH ORDINALITY AS t({names}, ord) ORDER BY ord {tail}"
    ).strip()


# From this many jobs without keys a batch is copied in (below, the extra round trip that
# takes the seqs costs more than the encoding it saves)
PG_COPY_MIN_ROWS = 64
# The next value of the jobs' seq sequence. Its name looked up once per statement (an
# InitPlan): pg_get_serial_sequence per row scans pg_depend each time, ~13 us a row.
PG_NEXT_SEQ = f"nextval((SELECT pg_get_serial_sequence('{jobs.name}', 'seq')::regclass))"
# `count` values of the jobs' seq sequence, taken in order
_PG_NEXT_SEQS = f"SELECT {PG_NEXT_SEQ} FROM generate_series(1, $1)"


async def pg_copy_jobs(
    conn: AsyncConnection, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> list[int]:
    """Inserts job rows (values for `columns`; no idempotency keys: COPY cannot skip taken
    ones) with COPY, in `conn`'s transaction; returns each row's seq, increasing in input
    order like the column default's would be."""
    # through SQLAlchemy first: it opens the transaction the COPY then joins
    taken = await conn.exec_driver_sql(_PG_NEXT_SEQS, (len(rows),))
    seqs = sorted(seq for (seq,) in taken.all())
    driver = await driver_connection(conn)
    records = [(seq, *row) for seq, row in zip(seqs, rows, strict=True)]
    await driver.copy_records_to_table(jobs.name, records=records, columns=("seq", *columns))
    return seqs
