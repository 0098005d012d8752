"""A fire's transaction on SQLite (Transitions.fire_due) in two hops to the driver's thread.

Through SQLAlchemy a fire of one job was a dozen statements, each a hop or more to aiosqlite's
thread and back: 5-15 ms on a quiet server, and a job coming due meanwhile waited for it (the
idle fire-lateness tail). Here the first hop begins the write transaction, stores the endings
waiting beside the fire, moves misfired recurring jobs on and promotes what came due; the event
loop then asks the fire for each promoted queue's room (the dispatcher's state, which only the
loop touches); the second hop claims, opens the attempt rows, appends the events and commits.
The statements and fences are those of sqlite_cycle and attempt_writes; the promotion and
catch-up are PostgreSQL's (pg_cycle) in SQLite's SQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobwheel.server.model import Event, EventType, Job, JobState, Micros
from jobwheel.server.rules.states import CLAIMABLE, WAITING, CatchUp, Settlement, caught_up
from jobwheel.server.storage.bulk_writes import and_commit, begun, in_sqlite_thread, roll_back
from jobwheel.server.storage.convert import JOB_COLUMNS, job_from_values, moved_on_values
from jobwheel.server.storage.events import TextChange, by_seq, events_of, text_changes
from jobwheel.server.storage.snapshot_sql import JOB_SNAPSHOT_SQL
from jobwheel.server.storage.sqlite_cycle import (
    append_changes,
    claim_sql,
    claims_of,
    settle_in,
    snapshots,
)
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:  # transitions imports this module
    from jobwheel.server.storage.transitions import FireClaim

_WAITING = " OR ".join(f"state = '{state.value}'" for state in WAITING)  # ix_jobs_due's form
# what came due becomes QUEUED (parameters: now, now); its rows and snapshots
_PROMOTE = (
    f"UPDATE jobs SET state = '{CLAIMABLE.value}', update_time = ?"
    f" WHERE ({_WAITING}) AND next_run_time <= ?"
    f" RETURNING {', '.join(JOB_COLUMNS)}, {JOB_SNAPSHOT_SQL}"
)
# seqs of recurring jobs that missed a run due before ?, through the due index (see
# pg_cycle's), then their rows by seq
_LATE = (
    f"SELECT seq FROM jobs WHERE state = '{JobState.SCHEDULED.value}' AND next_run_time < ?"
    " AND recurring = 1"
)
_LATE_ROWS = (
    f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE state = '{JobState.SCHEDULED.value}'"
    " AND next_run_time < ? AND seq IN ({}) ORDER BY seq"
)
# convert.moved_on_values
_MOVE_ON = (
    "UPDATE jobs SET next_run_time = ?, skipped_count = ?, state = ?, end_time = ?,"
    " update_time = ? WHERE seq = ?"
)


async def sqlite_fire(
    conn: AsyncConnection,
    now: Micros,
    misfire_before: Micros | None,
    catch_up: CatchUp | None,
    claim: FireClaim | None,
    max_in_list: int,
) -> tuple[list[bool], list[Job], list[Job], list[Event]]:
    """Transitions.fire_due on `conn` (Store._raw_write: no transaction begun), `claim.room`
    asked on the event loop between the hops. Returns which of the claim's settlements
    applied, the jobs promoted, the jobs claimed (per queue in name order) and the events
    committed; telling `claim` and emitting are the caller's. Errors are SQLAlchemy's
    (in_sqlite_thread)."""
    settlements = claim.settlements if claim is not None else ()
    applies, promoted, changes = await in_sqlite_thread(
        conn, begun, _due, now, misfire_before, catch_up, settlements, max_in_list
    )
    try:
        claims: list[tuple[str, int]] = []
        if claim is not None:
            claims = [(queue, claim.room(queue)) for queue in sorted({j.queue for j in promoted})]
        claimed, last = await in_sqlite_thread(
            conn, and_commit, _start_due, claims, claim, now, changes
        )
    except BaseException:
        # what ended the fire goes on, whatever the rollback meets (a closed connection must
        # not turn a cancellation into an error that a retry loop takes for a failed fire)
        with contextlib.suppress(Exception):
            await in_sqlite_thread(conn, roll_back)
        raise
    started = [job for jobs in claimed for job in jobs]
    return applies, promoted, started, events_of(changes, last, now)


def _due(
    db: sqlite3.Connection,
    now: Micros,
    misfire_before: Micros | None,
    catch_up: CatchUp | None,
    settlements: Sequence[Settlement],
    max_in_list: int,
) -> tuple[list[bool], list[Job], list[TextChange]]:
    """The first hop's work, in the write transaction."""
    applies, changes = settle_in(db, settlements, max_in_list)
    if catch_up is not None and misfire_before is not None:
        changes += _caught_up(db, now, misfire_before, catch_up, max_in_list)
    promoted, queued = text_changes(EventType.QUEUED, by_seq(db.execute(_PROMOTE, (now, now))))
    changes += queued
    return applies, promoted, changes


def _caught_up(
    db: sqlite3.Connection, now: Micros, before: Micros, catch_up: CatchUp, max_in_list: int
) -> list[TextChange]:
    """Recurring jobs due before `before` move on (`catch_up`), as pg_cycle's do."""
    seqs = sorted(seq for (seq,) in db.execute(_LATE, (before,)))
    moved: list[tuple[Job, list[EventType]]] = []
    for start in range(0, len(seqs), max_in_list):
        chunk = seqs[start : start + max_in_list]
        sql = _LATE_ROWS.format(",".join("?" * len(chunk)))
        for row in db.execute(sql, (before, *chunk)).fetchall():
            job = job_from_values(row)
            after, kinds = caught_up(job, now, *catch_up(job))
            db.execute(_MOVE_ON, moved_on_values(after, now))
            moved.append((after, kinds))
    texts = snapshots(db, "seq", [job.seq for job, _ in moved], max_in_list)
    return [(kind, job, texts[job.id]) for job, kinds in moved for kind in kinds]


def _start_due(
    db: sqlite3.Connection,
    claims: Sequence[tuple[str, int]],
    claim: FireClaim | None,
    now: Micros,
    changes: list[TextChange],
) -> tuple[list[list[Job]], int]:
    """The second hop's work: the claims (queue, room), then every event of the fire."""
    claimed: list[list[Job]] = []
    if claim is not None:
        tasks = tuple(claim.tasks)
        sql = claim_sql(len(tasks), claim.include_http) if tasks or claim.include_http else None
        claimed = claims_of(
            db, claims, sql, tasks, claim.worker_id, now, claim.lease_until, changes
        )
    return claimed, append_changes(db, changes, now)
