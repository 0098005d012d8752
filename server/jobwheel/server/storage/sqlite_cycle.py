"""The dispatch cycle's transaction on SQLite, in one call to the driver's thread.

Through SQLAlchemy a cycle is about nine statements, each one hop or more to aiosqlite's
thread and back, waiting for a turn of a busy event loop; here the whole write transaction
(settle the attempts that ended, claim each queue's next jobs, open their attempt rows,
append the events, commit) runs on the driver's own connection in one hop. The fences are
those of attempt_writes (sqlite_settle is the same code); the claim is claim_statement's for
the in-process filter of transitions._claimable, written out in SQL. The events' snapshots
come from SQL too (snapshot_sql): the claim returns its jobs' texts, a read after the
settlement those of the jobs it ended.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from jobwheel.server.ids import new_ids
from jobwheel.server.model import Event, EventType, Job, JobState, Micros
from jobwheel.server.rules.states import CLAIMABLE, Settlement
from jobwheel.server.storage.attempt_writes import sqlite_open_attempts, sqlite_settle
from jobwheel.server.storage.bulk_writes import (
    in_sqlite_thread,
    in_write_transaction,
    sqlite_append_events,
)
from jobwheel.server.storage.convert import JOB_COLUMNS
from jobwheel.server.storage.events import (
    TextChange,
    claim_order,
    event_rows,
    events_of,
    text_changes,
)
from jobwheel.server.storage.snapshot_sql import JOB_SNAPSHOT_SQL
from sqlalchemy import literal_column
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningUpdate

# (id, snapshot) of jobs by seq (the rowid: no index to search) or by id
_SNAPSHOTS = f"SELECT id, {JOB_SNAPSHOT_SQL} FROM jobs WHERE "


@functools.lru_cache(maxsize=64)
def claim_sql(tasks: int, include_http: bool) -> str:
    """QUEUED jobs of a queue with one of `tasks` tasks (or an HTTP target) become RUNNING,
    best priority first, FIFO within one; parameters: now, now, worker id, lease end, queue,
    the tasks, limit. Returns the claimed rows (JOB_COLUMNS, then the job's snapshot)."""
    runnable = []
    if tasks:
        runnable.append(f"task IN ({','.join('?' * tasks)})")
    if include_http:
        runnable.append("http IS NOT NULL")
    return (
        # never before the job's last change (another writer's, with a later clock reading)
        f"UPDATE jobs SET state = '{JobState.RUNNING.value}', update_time = max(?, update_time),"
        # a job that has not started its current execution begins a new one
        " execution_count = execution_count + CASE WHEN attempt = 0 THEN 1 ELSE 0 END,"
        " released_attempts = CASE WHEN attempt = 0 THEN 0 ELSE released_attempts END,"
        " attempt = attempt + 1, epoch = epoch + 1, start_time = max(?, update_time),"
        " worker_id = ?, lease_expire_time = ?"
        " WHERE seq IN (SELECT seq FROM jobs"
        f" WHERE state = '{CLAIMABLE.value}' AND queue = ? AND ({' OR '.join(runnable)})"
        " ORDER BY priority DESC, seq LIMIT ?)"
        f" RETURNING {', '.join(JOB_COLUMNS)}, {JOB_SNAPSHOT_SQL}"
    )


async def sqlite_dispatch_cycle(
    conn: AsyncConnection,
    settlements: Sequence[Settlement],
    claims: Sequence[tuple[str, int]],
    tasks: Collection[str],
    worker_id: str,
    now: Micros,
    lease_until: Micros,
    *,
    include_http: bool,
    max_in_list: int,
) -> tuple[list[bool], list[list[Job]], list[Event]]:
    """Transitions.dispatch_cycle on SQLite, on `conn` (Store._raw_write: no transaction
    begun); also returns the events it committed, for the caller to emit. Errors are
    SQLAlchemy's (in_sqlite_thread)."""
    names = tuple(tasks)
    sql = claim_sql(len(names), include_http) if names or include_http else None
    applies, claimed, changes, last = await in_sqlite_thread(
        conn,
        in_write_transaction,
        _cycle,
        settlements,
        claims,
        sql,
        names,
        worker_id,
        now,
        lease_until,
        max_in_list,
    )
    return applies, claimed, events_of(changes, last, now)


def _cycle(
    db: sqlite3.Connection,
    settlements: Sequence[Settlement],
    claims: Sequence[tuple[str, int]],
    sql: str | None,
    tasks: tuple[str, ...],
    worker_id: str,
    now: Micros,
    lease_until: Micros,
    max_in_list: int,
) -> tuple[list[bool], list[list[Job]], list[TextChange], int]:
    """In the driver's thread, in a write transaction: returns which settlements applied,
    the jobs claimed for each claim (none where `sql`, the claim, is None: nothing could
    match), the event changes in revision order and the last revision they took (0 without
    any)."""
    applies, changes = settle_in(db, settlements, max_in_list)
    claimed = claims_of(db, claims, sql, tasks, worker_id, now, lease_until, changes)
    return applies, claimed, changes, append_changes(db, changes, now)


def claims_of(
    db: sqlite3.Connection,
    claims: Sequence[tuple[str, int]],
    sql: str | None,
    tasks: tuple[str, ...],
    worker_id: str,
    now: Micros,
    lease_until: Micros,
    changes: list[TextChange],
) -> list[list[Job]]:
    """Runs each (queue, limit) of `claims` with `sql` (claim_sql; None: nothing could match)
    and returns the jobs each claimed; their STARTED changes are appended to `changes`."""
    claimed: list[list[Job]] = []
    for queue, limit in claims:
        if sql is None or limit <= 0:
            claimed.append([])
            continue
        params = (now, now, worker_id, lease_until, queue, *tasks, limit)
        started, starts = _start(db, sql, params, now, worker_id)
        claimed.append(started)
        changes += starts
    return claimed


def settle_in(
    db: sqlite3.Connection, settlements: Sequence[Settlement], max_in_list: int
) -> tuple[list[bool], list[TextChange]]:
    """Applies the settlements that hold (sqlite_settle); which applied, and the event
    changes of those. In the driver's thread, in a write transaction."""
    applies = sqlite_settle(db, settlements, max_in_list) if settlements else []
    return applies, _settled(db, settlements, applies, max_in_list)


def _settled(
    db: sqlite3.Connection,
    settlements: Sequence[Settlement],
    applies: list[bool],
    max_in_list: int,
) -> list[TextChange]:
    """The event changes of the settlements that applied, with the snapshots of their jobs
    as the settlements left them."""
    applied = [s for s, ok in zip(settlements, applies, strict=True) if ok]
    texts = snapshots(db, "seq", [s.after.seq for s in applied], max_in_list)
    # a job known without its seq (0) is read by id
    missing = [s.after.id for s in applied if s.after.id not in texts]
    if missing:
        texts.update(snapshots(db, "id", missing, max_in_list))
    return [(etype, s.after, texts[s.after.id]) for s in applied for etype in s.events]


def snapshots(
    db: sqlite3.Connection, column: str, keys: Sequence[object], max_in_list: int
) -> dict[str, str]:
    """The snapshots of the jobs whose `column` is one of `keys`, by job id."""
    texts: dict[str, str] = {}
    for start in range(0, len(keys), max_in_list):
        chunk = keys[start : start + max_in_list]
        texts.update(db.execute(f"{_SNAPSHOTS}{column} IN ({','.join('?' * len(chunk))})", chunk))
    return texts


def _start(
    db: sqlite3.Connection, sql: str, params: Sequence[object], now: Micros, worker_id: str
) -> tuple[list[Job], list[TextChange]]:
    """Runs a claim (`sql` returning JOB_COLUMNS and the snapshot of the jobs it made RUNNING)
    and opens their attempt rows; the jobs best priority first, FIFO within one, and their
    STARTED changes."""
    rows = db.execute(sql, params).fetchall()
    if not rows:
        return [], []
    started, starts = text_changes(EventType.STARTED, claim_order(rows))
    sqlite_open_attempts(db, started, new_ids(len(started)), worker_id)
    return started, starts


def append_changes(db: sqlite3.Connection, changes: list[TextChange], now: Micros) -> int:
    """Appends the events of `changes`; the last revision (0 without any)."""
    if not changes:
        return 0
    return sqlite_append_events(db, event_rows(changes, now))


async def sqlite_start_attempts(
    conn: AsyncConnection, claim: ReturningUpdate[Any], worker_id: str, now: Micros
) -> tuple[list[Job], list[Event]]:
    """Transitions._start_attempts on SQLite in one driver-thread hop, on `conn`
    (Store._raw_write): `claim` (attempt_writes.claim_statement) runs, the attempt rows are
    opened and the STARTED events appended in one write transaction. Returns the jobs
    started and the events committed, for the caller to emit."""
    claim = claim.returning(literal_column(JOB_SNAPSHOT_SQL))  # after the jobs' columns
    compiled = claim.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    started, changes, last = await in_sqlite_thread(
        conn, in_write_transaction, _lease, str(compiled), params, worker_id, now
    )
    return started, events_of(changes, last, now)


def _lease(
    db: sqlite3.Connection, sql: str, params: Sequence[object], worker_id: str, now: Micros
) -> tuple[list[Job], list[TextChange], int]:
    started, changes = _start(db, sql, params, now, worker_id)
    return started, changes, append_changes(db, changes, now)
