"""The dispatch cycle's and the fire's transactions on PostgreSQL, on asyncpg's own connection.

Through SQLAlchemy each statement of these cost the event loop 1-2.5 ms on a quiet server where
the database spent 0.1-0.8 ms on it (the Core statement's compile and result, the adapter's
cursor and greenlet): a fire of one job, six statements, took 9-10 ms, and a job coming due
meanwhile waited for it. Here asyncpg runs the same statements directly (its statement cache
prepares each once per connection) in a transaction this module begins and commits. The
settlement and claim are attempt_writes' statements, the event append the dialect's; the
promotion and the misfire catch-up are written out in the due index's form. Between the
promotion and the claims the fire asks the event loop's dispatcher for each queue's room, as
SQLite's fire (sqlite_fire) does between its hops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
from jobwheel.server.model import Event, EventType, Job, JobState, Micros
from jobwheel.server.rules.states import CLAIMABLE, WAITING, CatchUp, Settlement, caught_up
from jobwheel.server.storage.attempt_writes import (
    pg_claim_queue,
    pg_rehearse,
    pg_settle_endings,
)
from jobwheel.server.storage.convert import (
    JOB_COLUMNS,
    job_from_values,
    job_snapshot,
    moved_on_values,
)
from jobwheel.server.storage.dialect import notify_token, pg_append_event_rows
from jobwheel.server.storage.driver import driver_connection
from jobwheel.server.storage.events import (
    TextChange,
    by_seq,
    event_rows,
    events_of,
    text_changes,
)
from jobwheel.server.storage.pg_enqueue import pg_rehearse_enqueue
from jobwheel.server.storage.snapshot_sql import PG_JOB_SNAPSHOT_SQL
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:  # transitions imports this module
    from jobwheel.server.storage.transitions import FireClaim

_COLUMNS = ", ".join(JOB_COLUMNS)
_SCHEDULED = JobState.SCHEDULED.value
# what came due becomes QUEUED ($1: now); its rows and snapshots. The states as ix_jobs_due's
# predicate spells them.
_PROMOTE = (
    f"UPDATE jobs SET state = '{CLAIMABLE.value}', update_time = $1::int8"
    f" WHERE state IN ({', '.join(repr(state.value) for state in WAITING)})"
    f" AND next_run_time <= $1::int8 RETURNING {_COLUMNS}, {PG_JOB_SNAPSHOT_SQL}"
)
# Recurring jobs that missed a run due before $1. Only the due index finds them cheaply: ordered
# by seq with a limit, a planner may walk the (state, seq) index through every pending job
# instead (1 s at 1M).
_LATE = (
    f"SELECT seq FROM jobs WHERE state = '{_SCHEDULED}' AND next_run_time < $1::int8 AND recurring"
)
# their rows, a batch of seqs at a time; a row another writer holds is left to it
_LATE_ROWS = (
    f"SELECT {_COLUMNS} FROM jobs WHERE seq = ANY($1::int8[]) AND state = '{_SCHEDULED}'"
    " AND next_run_time < $2::int8 ORDER BY seq FOR UPDATE SKIP LOCKED"
)
# convert.moved_on_values
_MOVE_ON = (
    "UPDATE jobs SET next_run_time = $1::int8, skipped_count = $2::int4, state = $3::varchar,"
    " end_time = $4::int8, update_time = $5::int8 WHERE seq = $6::int8"
)
_CATCH_UP_BATCH = 1000
# Before all times a job may hold (timestamps start at year 1): nothing is due before it
_NEVER = -(2**63)
# Connections warm_up opens at once: a quiet server's fires, dispatch cycles, enqueues, reads
# and maintenance held up to about this many at a time (with 3 warmed, the first fires of a
# new server still met cold ones); fewer than the pool keeps
WARM_CONNECTIONS = 6


@asynccontextmanager
async def driver_transaction(conn: AsyncConnection, *, commit: bool = True) -> AsyncIterator[Any]:
    """`conn`'s asyncpg connection (Store._raw_write: no transaction begun) in a transaction of
    its own, committed on leaving (rolled back, with `commit` False). Whatever is raised
    inside rolls it back; asyncpg's errors come out as SQLAlchemy's DBAPIError (what the rest
    of the store raises, and errors.py and outage.py read), others as they are; a rollback
    that fails (the connection lost) invalidates the connection rather than replace what was
    raised (a cancellation above all)."""
    db = await driver_connection(conn)
    transaction = db.transaction()
    try:
        await transaction.start()
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _wrapped("BEGIN", exc) from exc
    try:
        yield db
        await (transaction.commit() if commit else transaction.rollback())
    except BaseException as exc:
        try:
            await transaction.rollback()
        except Exception:
            await conn.invalidate()
        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
            raise _wrapped("pg_cycle", exc) from exc
        raise


@asynccontextmanager
async def driver_statement(conn: AsyncConnection) -> AsyncIterator[Any]:
    """`conn`'s asyncpg connection (Store._raw_write: no transaction begun) for one statement
    that commits on its own: one round trip where driver_transaction takes three. asyncpg's
    errors come out as in driver_transaction."""
    db = await driver_connection(conn)
    try:
        yield db
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _wrapped("pg_statement", exc) from exc


def _wrapped(statement: str, exc: Exception) -> Exception:
    wrapped: Exception = sa_exc.DBAPIError.instance(statement, None, exc, asyncpg.PostgresError)
    return wrapped


async def warm_up(engine: AsyncEngine, count: int = WARM_CONNECTIONS) -> None:
    """Opens `count` of `engine`'s pooled connections at once and runs the fire's and the
    dispatch cycle's statements on each with inputs that match no row, in a transaction
    rolled back: each backend reads the catalog of the tables and indexes they touch and
    asyncpg prepares them once, before the server serves. On a cold connection the first
    fire took 10-40 ms more than on a warm one (each statement 2.5-5 ms instead of 0.5)."""

    async def one() -> None:
        async with engine.connect() as conn, driver_transaction(conn, commit=False) as db:
            await db.fetch(_PROMOTE, _NEVER)
            await db.fetch(_LATE, _NEVER)
            await pg_rehearse(db)
            await pg_append_event_rows(db, [], "")

    await asyncio.gather(*(one() for _ in range(count)))


async def warm_up_enqueues(engine: AsyncEngine) -> None:
    """warm_up for the enqueues' connection (dialect.PG_ENQUEUE_SETTINGS): opens it and runs
    their one-statement insert with no jobs, rolled back."""
    async with engine.connect() as conn, driver_transaction(conn, commit=False) as db:
        await pg_rehearse_enqueue(db)


async def pg_dispatch_cycle(
    conn: AsyncConnection,
    settlements: Sequence[Settlement],
    claims: Sequence[tuple[str, int]],
    tasks: Collection[str],
    worker_id: str,
    now: Micros,
    lease_until: Micros,
    *,
    include_http: bool,
) -> tuple[list[bool], list[list[Job]], list[Event]]:
    """Transitions.dispatch_cycle on PostgreSQL, on `conn` (Store._raw_write); also returns
    the events it committed, for the caller to emit."""
    token = notify_token(conn.sync_engine)
    async with driver_transaction(conn) as db:
        applies, changes = await pg_settle_endings(db, settlements)
        claimed = await _claims(
            db, claims, tasks, include_http, worker_id, now, lease_until, changes
        )
        last = await _append(db, changes, now, token)
    return applies, claimed, events_of(changes, last, now)


async def pg_fire(
    conn: AsyncConnection,
    now: Micros,
    misfire_before: Micros | None,
    catch_up: CatchUp | None,
    claim: FireClaim | None,
) -> tuple[list[bool], list[Job], list[Job], list[Event]]:
    """Transitions.fire_due on PostgreSQL, on `conn` (Store._raw_write), `claim.room` asked
    between the promotion and the claims. Returns which of the claim's settlements applied,
    the jobs promoted, the jobs claimed (per queue in name order) and the events committed;
    telling `claim` and emitting are the caller's."""
    token = notify_token(conn.sync_engine)
    async with driver_transaction(conn) as db:
        applies: list[bool] = []
        changes: list[TextChange] = []
        if claim is not None and claim.settlements:
            applies, changes = await pg_settle_endings(db, claim.settlements)
        if catch_up is not None and misfire_before is not None:
            changes += await _caught_up(db, now, misfire_before, catch_up)
        promoted, queued = text_changes(EventType.QUEUED, by_seq(await db.fetch(_PROMOTE, now)))
        changes += queued
        claimed: list[list[Job]] = []
        if claim is not None:
            # each queue's room asked as its claim comes
            rooms = ((queue, claim.room(queue)) for queue in sorted({j.queue for j in promoted}))
            claimed = await _claims(
                db,
                rooms,
                claim.tasks,
                claim.include_http,
                claim.worker_id,
                now,
                claim.lease_until,
                changes,
            )
        last = await _append(db, changes, now, token)
    started = [job for jobs in claimed for job in jobs]
    return applies, promoted, started, events_of(changes, last, now)


async def _claims(
    db: Any,
    claims: Iterable[tuple[str, int]],
    tasks: Collection[str],
    include_http: bool,
    worker_id: str,
    now: Micros,
    lease_until: Micros,
    changes: list[TextChange],
) -> list[list[Job]]:
    """The in-process claim of each (queue, limit) of `claims`, in turn: the jobs each
    claimed (none where no job could match); their STARTED changes are appended to
    `changes`."""
    claimed: list[list[Job]] = []
    for queue, limit in claims:
        if limit <= 0 or not (tasks or include_http):
            claimed.append([])
            continue
        jobs, starts = await pg_claim_queue(
            db, queue, tasks, include_http, limit, worker_id, now, lease_until
        )
        claimed.append(jobs)
        changes += starts
    return claimed


async def _caught_up(db: Any, now: Micros, before: Micros, catch_up: CatchUp) -> list[TextChange]:
    """Recurring jobs due before `before` move on (`catch_up`), in batches by seq."""
    seqs = sorted(seq for (seq,) in await db.fetch(_LATE, before))
    changes: list[TextChange] = []
    for start in range(0, len(seqs), _CATCH_UP_BATCH):
        late = await db.fetch(_LATE_ROWS, seqs[start : start + _CATCH_UP_BATCH], before)
        moved = [caught_up(job, now, *catch_up(job)) for job in map(job_from_values, late)]
        if not moved:
            continue
        await db.executemany(_MOVE_ON, [moved_on_values(after, now) for after, _ in moved])
        changes += [(kind, after, job_snapshot(after)) for after, kinds in moved for kind in kinds]
    return changes


async def _append(db: Any, changes: list[TextChange], now: Micros, token: str) -> int:
    """Appends the events of `changes`, last in the transaction; the last revision (0
    without any)."""
    if not changes:
        return 0
    return await pg_append_event_rows(db, event_rows(changes, now), token)
