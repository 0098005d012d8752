"""The dispatch cycle's transaction on SQLite, in one call to the driver's thread.

Through SQLAlchemy a cycle is about nine statements, each one hop or more to aiosqlite's
thread and back, waiting for a turn of a busy event loop; here the whole write transaction
(settle the attempts that ended, claim each queue's next jobs, open their attempt rows,
append the events, commit) runs on the driver's own connection in one hop. The fences are
those of attempt_writes (sqlite_settle is the same code); the claim is start_attempts' for
the in-process filter of transitions._claimable, written out in SQL.
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
from jobwheel.server.storage.convert import job_from_row, job_snapshot
from jobwheel.server.storage.schema import jobs
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningUpdate

_COLUMNS = tuple(c.name for c in jobs.c)


@functools.lru_cache(maxsize=64)
def _claim_sql(tasks: int, include_http: bool) -> str:
    """QUEUED jobs of a queue with one of `tasks` tasks (or an HTTP target) become RUNNING,
    best priority first, FIFO within one; parameters: now, now, worker id, lease end, queue,
    the tasks, limit. Returns the claimed rows (_COLUMNS)."""
    runnable = []
    if tasks:
        runnable.append(f"task IN ({','.join('?' * tasks)})")
    if include_http:
        runnable.append("http IS NOT NULL")
    return (
        f"UPDATE jobs SET state = '{JobState.RUNNING.value}', update_time = ?,"
        # a job that has not started its current execution begins a new one
        " execution_count = execution_count + CASE WHEN attempt = 0 THEN 1 ELSE 0 END,"
        " released_attempts = CASE WHEN attempt = 0 THEN 0 ELSE released_attempts END,"
        " attempt = attempt + 1, start_time = ?, worker_id = ?, lease_expire_time = ?"
        " WHERE seq IN (SELECT seq FROM jobs"
        f" WHERE state = '{CLAIMABLE.value}' AND queue = ? AND ({' OR '.join(runnable)})"
        " ORDER BY priority DESC, seq LIMIT ?)"
        f" RETURNING {', '.join(_COLUMNS)}"
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
    sql = _claim_sql(len(names), include_http) if names or include_http else None
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
    return applies, claimed, _events(changes, last, now)


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
) -> tuple[list[bool], list[list[Job]], list[tuple[EventType, Job]], int]:
    """In the driver's thread, in a write transaction: returns which settlements applied,
    the jobs claimed for each claim (none where `sql`, the claim, is None: nothing could
    match), the event changes in revision order and the last revision they took (0 without
    any)."""
    applies = sqlite_settle(db, settlements, max_in_list) if settlements else []
    changes = [
        (etype, s.after)
        for s, ok in zip(settlements, applies, strict=True)
        if ok
        for etype in s.events
    ]
    claimed: list[list[Job]] = []
    for queue, limit in claims:
        if sql is None or limit <= 0:
            claimed.append([])
            continue
        params = (now, now, worker_id, lease_until, queue, *tasks, limit)
        started = _start(db, sql, params, now, worker_id)
        claimed.append(started)
        changes += [(EventType.STARTED, job) for job in started]
    return applies, claimed, changes, _append(db, changes, now)


def _start(
    db: sqlite3.Connection, sql: str, params: Sequence[object], now: Micros, worker_id: str
) -> list[Job]:
    """Runs a claim (`sql` returning _COLUMNS of the jobs it made RUNNING) and opens their
    attempt rows; the jobs best priority first, FIFO within one."""
    found = [dict(zip(_COLUMNS, row, strict=True)) for row in db.execute(sql, params)]
    if found:
        sqlite_open_attempts(db, found, new_ids(len(found)), now, worker_id)
    started = [job_from_row(r) for r in found]
    started.sort(key=lambda j: (-j.priority, j.seq))
    return started


def _append(db: sqlite3.Connection, changes: list[tuple[EventType, Job]], now: Micros) -> int:
    """Appends the events of `changes`; the last revision (0 without any)."""
    if not changes:
        return 0
    return sqlite_append_events(
        db, [(job.id, etype.value, now, job_snapshot(job)) for etype, job in changes]
    )


def _events(changes: list[tuple[EventType, Job]], last: int, now: Micros) -> list[Event]:
    first = last - len(changes) + 1
    return [
        Event(revision=first + i, type=etype, job=job, time=now)
        for i, (etype, job) in enumerate(changes)
    ]


async def sqlite_start_attempts(
    conn: AsyncConnection, claim: ReturningUpdate[Any], worker_id: str, now: Micros
) -> tuple[list[Job], list[Event]]:
    """Transitions._start_attempts on SQLite in one driver-thread hop, on `conn`
    (Store._raw_write): `claim` (attempt_writes.claim_statement) runs, the attempt rows are
    opened and the STARTED events appended in one write transaction. Returns the jobs
    started and the events committed, for the caller to emit."""
    compiled = claim.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    started, changes, last = await in_sqlite_thread(
        conn, in_write_transaction, _lease, str(compiled), params, worker_id, now
    )
    return started, _events(changes, last, now)


def _lease(
    db: sqlite3.Connection, sql: str, params: Sequence[object], worker_id: str, now: Micros
) -> tuple[list[Job], list[tuple[EventType, Job]], int]:
    started = _start(db, sql, params, now, worker_id)
    changes = [(EventType.STARTED, job) for job in started]
    return started, changes, _append(db, changes, now)
