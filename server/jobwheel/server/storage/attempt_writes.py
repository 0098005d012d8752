"""Starting and ending attempts inside a caller's write transaction.

The only claim statement (the dispatch cycle's claims, a fire's claim of the queues it
promoted, a remote worker's lease) and the settlement of attempt endings (the dispatch cycle,
remote workers' reports) are steps a caller combines in one transaction: each returns the
event changes it made, each with its job's snapshot written by the statement itself
(snapshot_sql), and the caller appends them once, last (storage/events.py). Each step is
set-based, a few statements whatever the number of jobs.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from jobwheel.server.ids import new_ids
from jobwheel.server.model import AttemptOutcome, EventType, Job, JobState, Micros
from jobwheel.server.rules.states import Settlement
from jobwheel.server.storage.convert import (
    JOB_COLUMNS,
    job_result_doc,
)
from jobwheel.server.storage.dialect import POSTGRESQL, Dialect
from jobwheel.server.storage.events import TextChange, claim_order, text_changes
from jobwheel.server.storage.schema import attempts, jobs
from jobwheel.server.storage.snapshot_sql import PG_JOB_SNAPSHOT_SQL, pg_job_snapshot_sql
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import Grouping

_RUNNING = JobState.RUNNING.value
_ATTEMPT_RUNNING = AttemptOutcome.RUNNING.value

# Driver-level statements (no per-row work in SQLAlchemy): `?` for SQLite's executemany;
# PostgreSQL gets each column as one array, unnested: one statement, one round trip.
_SQLITE_SETTLE_JOB = (
    "UPDATE jobs SET state = ?, next_run_time = ?, attempt = ?, end_time = ?, last_error = ?,"
    " result = ?, skipped_count = skipped_count + ?, released_attempts = ?, worker_id = '',"
    " lease_expire_time = NULL, update_time = ?"
    f" WHERE id = ? AND state = '{_RUNNING}' AND attempt = ? AND execution_count = ?"
)
_SQLITE_SETTLE_ATTEMPT = (
    "UPDATE attempts SET end_time = ?, outcome = ?, error = ?, result = ?"
    f" WHERE job_id = ? AND execution = ? AND number = ? AND outcome = '{_ATTEMPT_RUNNING}'"
)
_SQLITE_HELD = (
    "SELECT id, execution_count, attempt, lease_expire_time FROM jobs"
    f" WHERE state = '{_RUNNING}' AND id IN ({{}})"
)
_SQLITE_INSERT_ATTEMPT = (
    "INSERT INTO attempts (id, job_id, execution, number, start_time, outcome, worker_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# Fenced like SQLite's (the attempt held, and for a lost attempt an expired lease), in one
# statement: of a job's settlements that pass the fence (its rows locked first), the first in
# the batch applies; it ends the attempt rows of the jobs it settled and returns the indexes
# (1-based) of the settlements that applied. The fence locks each job by its id alone and
# checks the row it locked (LIMIT 1 keeps the lateral subquery apart, and the check out of it);
# the update, of rows so locked, reads them by id too (by ctid it would miss a row changed
# since the statement began). A condition on the state beside the id lets the planner read
# every RUNNING job instead, through the state index, whose entries for the versions claims
# left behind it visits until a vacuum: each settlement of a long drain cost more than the last.
# The attempts' update takes what it needs from the rows the jobs' update returns: a join of
# two CTEs, whose sizes the planner cannot know, may compare every pair of their rows. Each
# settled job's snapshot comes back with its index, for its events.
_PG_SETTLE = f"""
WITH v AS (
  SELECT * FROM unnest(
    $1::varchar[], $2::int[], $3::int[], $4::varchar[], $5::bigint[], $6::int[],
    $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::int[], $12::int[],
    $13::bigint[], $14::varchar[], $15::text[], $16::text[]
  ) WITH ORDINALITY AS v(id, held, execution, state, next_run_time, attempt, end_time,
         last_error, result, now, skipped, released, lease_before, outcome, error,
         attempt_result, ord)
), holding AS (
  SELECT v.* FROM v CROSS JOIN LATERAL (
    SELECT state, attempt, execution_count, lease_expire_time FROM jobs WHERE jobs.id = v.id
    LIMIT 1 FOR UPDATE
  ) AS held
  WHERE held.state = '{_RUNNING}' AND held.attempt = v.held AND held.execution_count = v.execution
    AND (v.lease_before IS NULL OR held.lease_expire_time < v.lease_before)
), w AS (
  SELECT DISTINCT ON (id) * FROM holding ORDER BY id, ord
), settled AS (
  UPDATE jobs SET state = w.state, next_run_time = w.next_run_time, attempt = w.attempt,
    end_time = w.end_time, last_error = w.last_error, result = w.result,
    skipped_count = jobs.skipped_count + w.skipped, released_attempts = w.released,
    worker_id = '', lease_expire_time = NULL, update_time = w.now
  FROM w
  WHERE jobs.id = w.id AND jobs.attempt = w.held AND jobs.execution_count = w.execution
  RETURNING jobs.id, w.ord, w.held, w.execution, w.now, w.outcome, w.error, w.attempt_result,
    {pg_job_snapshot_sql("jobs")} AS snapshot
), ended AS (
  UPDATE attempts SET end_time = s.now, outcome = s.outcome, error = s.error,
    result = s.attempt_result
  FROM settled AS s
  WHERE attempts.job_id = s.id AND attempts.execution = s.execution
    AND attempts.number = s.held AND attempts.outcome = '{_ATTEMPT_RUNNING}'
)
SELECT ord, snapshot FROM settled
"""

# The in-process claim of one queue (tasks this process runs, or with $3 HTTP targets) with
# the insert of the attempt rows, as pg_start_attempts, in SQL text: no statement to build per
# call; asyncpg prepares it once per connection. The n-th row claimed gets the n-th of the
# fresh attempt ids ($8). Returns JOB_COLUMNS and each job's snapshot.
_PG_CLAIM_QUEUE = f"""
WITH picked AS (
  SELECT seq FROM jobs
  WHERE state = '{JobState.QUEUED.value}' AND queue = $1::varchar
    AND (task = ANY($2::varchar[]) OR ($3::boolean AND http IS NOT NULL))
  ORDER BY priority DESC, seq LIMIT $4::int
  FOR UPDATE SKIP LOCKED
), claimed AS (
  UPDATE jobs SET state = '{_RUNNING}',
    execution_count = jobs.execution_count + CASE WHEN jobs.attempt = 0 THEN 1 ELSE 0 END,
    released_attempts = CASE WHEN jobs.attempt = 0 THEN 0 ELSE jobs.released_attempts END,
    attempt = jobs.attempt + 1, epoch = jobs.epoch + 1,
    start_time = GREATEST($5::bigint, jobs.update_time),
    update_time = GREATEST($5::bigint, jobs.update_time),
    worker_id = $6::varchar, lease_expire_time = $7::bigint
  FROM picked WHERE jobs.seq = picked.seq
  RETURNING jobs.*
), opened AS (
  INSERT INTO attempts (id, job_id, execution, number, start_time, outcome, worker_id)
  SELECT ($8::varchar[])[n], id, execution_count, attempt, start_time, '{_ATTEMPT_RUNNING}',
    $6::varchar
  FROM (SELECT id, execution_count, attempt, start_time, row_number() OVER () AS n
    FROM claimed) AS c
)
SELECT {", ".join(JOB_COLUMNS)}, {PG_JOB_SNAPSHOT_SQL} FROM claimed
"""


_PG_SETTLE_PARAMETERS = len(set(re.findall(r"\$(\d+)", _PG_SETTLE)))


async def pg_start_attempts(
    conn: AsyncConnection,
    where: list[ColumnElement[bool]],
    limit: int,
    worker_id: str,
    now: Micros,
    lease_until: Micros,
) -> tuple[list[Job], list[TextChange]]:
    """PostgreSQL: QUEUED jobs matching `where` (up to `limit`, best priority first, FIFO
    within one) become RUNNING for `worker_id`, each with a new attempt row; returned in that
    order, with their STARTED changes."""
    stmt = claim_statement(POSTGRESQL, where, limit, worker_id, now, lease_until)
    rows = (await conn.execute(_with_attempt_rows(stmt, limit, worker_id))).all()
    return _started(rows)


def claim_statement(
    dialect: Dialect,
    where: list[ColumnElement[bool]],
    limit: int,
    worker_id: str,
    now: Micros,
    lease_until: Micros,
) -> ReturningUpdate[Any]:
    """The UPDATE ... RETURNING the JOB_COLUMNS (in that order) that makes the QUEUED jobs
    matching `where` (up to `limit`, best priority first, FIFO within one) RUNNING for
    `worker_id`."""
    pick = (
        select(jobs.c.seq).where(*where).order_by(jobs.c.priority.desc(), jobs.c.seq).limit(limit)
    )
    pick = dialect.lock_rows(pick, skip_locked=True)
    # never before the job's last change: another replica may have queued it (a fire) with a
    # later clock reading than `now`, taken before this claim waited for that commit
    started_at = case((jobs.c.update_time > now, jobs.c.update_time), else_=now)
    return (
        update(jobs)
        .where(jobs.c.seq.in_(pick.scalar_subquery()))
        .values(
            state=JobState.RUNNING.value,
            # A job that has not started its current execution begins a new one.
            execution_count=jobs.c.execution_count + case((jobs.c.attempt == 0, 1), else_=0),
            released_attempts=case((jobs.c.attempt == 0, 0), else_=jobs.c.released_attempts),
            attempt=jobs.c.attempt + 1,
            epoch=jobs.c.epoch + 1,
            start_time=started_at,
            update_time=started_at,
            worker_id=worker_id,
            lease_expire_time=lease_until,
        )
        .returning(*(jobs.c[name] for name in JOB_COLUMNS))
    )


async def pg_claim_queue(
    db: Any,
    queue: str,
    tasks: Collection[str],
    include_http: bool,
    limit: int,
    worker_id: str,
    now: Micros,
    lease_until: Micros,
) -> tuple[list[Job], list[TextChange]]:
    """PostgreSQL: pg_start_attempts for the in-process claim of `queue` (jobs whose task is
    in `tasks`, or with `include_http` an HTTP target), in one prepared statement on `db`,
    asyncpg's connection in the caller's transaction (pg_cycle)."""
    params = (
        queue,
        list(tasks),
        include_http,
        limit,
        now,
        worker_id,
        lease_until,
        new_ids(limit),
    )
    return _started(await db.fetch(_PG_CLAIM_QUEUE, *params))


async def pg_rehearse(db: Any) -> None:
    """Runs the settlement's and the in-process claim's statements on asyncpg's connection
    `db` with inputs that match no row (no settlement, the queue ''), in the caller's
    transaction: pg_cycle.warm_up's part."""
    await db.fetch(_PG_SETTLE, *([[]] * _PG_SETTLE_PARAMETERS))  # arrays, each empty
    await pg_claim_queue(db, "", (), False, 0, "", 0, 0)


def _started(rows: Sequence[Sequence[Any]]) -> tuple[list[Job], list[TextChange]]:
    """Claimed rows (JOB_COLUMNS, then the snapshot): the jobs best priority first, FIFO
    within one, and their STARTED changes."""
    return text_changes(EventType.STARTED, claim_order(rows))


def _with_attempt_rows(claim: ReturningUpdate[Any], limit: int, worker_id: str) -> Select[Any]:
    """PostgreSQL: `claim` (an UPDATE of jobs RETURNING them) and the insert of an attempt
    row for each job it returns, in one statement (one round trip): the claimed rows, of
    which the n-th gets the n-th of `limit` fresh attempt ids."""
    claimed = claim.cte("claimed")
    numbered = select(
        claimed.c.id,
        claimed.c.execution_count,
        claimed.c.attempt,
        claimed.c.start_time,
        func.row_number().over().label("n"),
    ).subquery("numbered")
    ids = Grouping(bindparam("attempt_ids", new_ids(limit), type_=ARRAY(String)))
    opened = (
        insert(attempts)
        .from_select(
            ["id", "job_id", "execution", "number", "start_time", "outcome", "worker_id"],
            select(
                ids[numbered.c.n],
                numbered.c.id,
                numbered.c.execution_count,
                numbered.c.attempt,
                numbered.c.start_time,
                literal(_ATTEMPT_RUNNING, String),
                literal(worker_id, String),
            ),
        )
        .cte("opened")
    )
    return select(claimed, literal_column(PG_JOB_SNAPSHOT_SQL)).add_cte(opened)


async def pg_settle_endings(
    db: Any, settlements: Sequence[Settlement]
) -> tuple[list[bool], list[TextChange]]:
    """PostgreSQL: applies the settlements whose attempt the job still holds, in one
    statement on `db` (asyncpg's connection in the caller's transaction: pg_cycle); says
    which applied, and the event changes of those. Of a job's settlements in one batch (two
    reports merged), the first that holds applies, the others do not."""
    if not settlements:
        return [], []
    # sent in seq order, the order the statement locks rows in and bulk actions lock them in
    # (two settlements of one job keep theirs: the first that holds applies)
    order = sorted(range(len(settlements)), key=lambda i: settlements[i].after.seq)
    ordered = [settlements[i] for i in order]
    ended = [s.ended for s in ordered]
    after = [s.after for s in ordered]
    params = (
        [e.job_id for e in ended],
        [e.attempt for e in ended],
        [e.execution for e in ended],
        [a.state.value for a in after],
        [a.next_run_time for a in after],
        [a.attempt for a in after],
        [a.end_time for a in after],
        [a.last_error for a in after],
        [job_result_doc(a.result) for a in after],
        [e.now for e in ended],
        [s.skipped for s in ordered],
        [a.released_attempts for a in after],
        [s.lease_expired_before for s in ordered],
        [e.outcome.value for e in ended],
        [e.error for e in ended],
        [job_result_doc(e.result) for e in ended],
    )
    texts = {order[int(ord_) - 1]: text for ord_, text in await db.fetch(_PG_SETTLE, *params)}
    changes = [
        (etype, s.after, texts[i])
        for i, s in enumerate(settlements)
        if i in texts
        for etype in s.events
    ]
    return [i in texts for i in range(len(settlements))], changes


def sqlite_settle(
    db: sqlite3.Connection, settlements: Sequence[Settlement], max_in_list: int
) -> list[bool]:
    """SQLite: applies the settlements that hold (see pg_settle_endings) on the driver's own
    connection, in the caller's write transaction (in the driver's thread: in_sqlite_thread);
    which of `settlements` applied."""
    job_ids = list({s.ended.job_id for s in settlements})
    # (execution, attempt, lease end) of each RUNNING job among them; the write transaction
    # keeps them so until commit
    held: dict[str, tuple[int, int, Micros | None]] = {}
    for start in range(0, len(job_ids), max_in_list):
        chunk = job_ids[start : start + max_in_list]
        for job_id, execution, attempt, lease in db.execute(
            _SQLITE_HELD.format(",".join("?" * len(chunk))), chunk
        ):
            held[job_id] = (execution, attempt, lease)
    applies = []
    for s in settlements:
        ok = _holds(held.get(s.ended.job_id), s)
        if ok:
            held.pop(s.ended.job_id)  # settled: a later one of the job holds nothing
        applies.append(ok)
    applied = [s for s, ok in zip(settlements, applies, strict=True) if ok]
    if applied:
        db.executemany(_SQLITE_SETTLE_JOB, [_job_params(s) for s in applied])
        db.executemany(_SQLITE_SETTLE_ATTEMPT, [_attempt_params(s) for s in applied])
    return applies


def sqlite_open_attempts(
    db: sqlite3.Connection,
    started: Sequence[Job],
    ids: Sequence[str],
    worker_id: str,
) -> None:
    """SQLite: the RUNNING attempt row (id from `ids`, started when the job did) of each
    claimed job of `started`, in the caller's write transaction (in the driver's thread:
    in_sqlite_thread)."""
    running = _ATTEMPT_RUNNING
    db.executemany(
        _SQLITE_INSERT_ATTEMPT,
        [
            (i, j.id, j.execution_count, j.attempt, j.start_time, running, worker_id)
            for i, j in zip(ids, started, strict=True)
        ],
    )


def _holds(held: tuple[int, int, Micros | None] | None, s: Settlement) -> bool:
    """The job still runs the attempt `s` settles (and, for a lost one, its lease ran out)."""
    if held is None or held[:2] != (s.ended.execution, s.ended.attempt):
        return False
    limit = s.lease_expired_before
    return limit is None or (held[2] is not None and held[2] < limit)


def _job_params(s: Settlement) -> tuple[Any, ...]:
    ended, after = s.ended, s.after
    return (
        after.state.value,
        after.next_run_time,
        after.attempt,
        after.end_time,
        after.last_error,
        job_result_doc(after.result),
        s.skipped,
        after.released_attempts,
        ended.now,
        ended.job_id,
        ended.attempt,
        ended.execution,
    )


def _attempt_params(s: Settlement) -> tuple[Any, ...]:
    ended = s.ended
    return (
        ended.now,
        ended.outcome.value,
        ended.error,
        job_result_doc(ended.result),
        ended.job_id,
        ended.execution,
        ended.attempt,
    )
