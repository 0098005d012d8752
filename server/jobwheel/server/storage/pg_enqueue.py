"""PostgreSQL: a batch of jobs without idempotency keys, alike in all but their ids, payloads and
times (the usual BatchEnqueueJobs, and single enqueues merged by the group commit), in one
statement that commits on its own: it inserts the jobs, their seqs taken in input order, and
their ENQUEUED events, built from the same arrays. The values the jobs share travel once, as
scalars, and no snapshot is encoded per job; COPY of whole rows plus an events statement of
whole snapshots cost twice the time. It runs on asyncpg's own connection
(pg_cycle.driver_statement): with 64 callers of single enqueues, through SQLAlchemy the event
loop spent a fifth more CPU a call, and BEGIN, a statement per table and COMMIT took four round
trips. Larger batches go in chunks (ChunkedEnqueue)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobwheel.server.model import Job, NewJob
from jobwheel.server.storage.bulk_writes import (
    EVENT_COLUMNS,
    PG_NEXT_SEQ,
    columns_of,
    pg_array_type,
)
from jobwheel.server.storage.convert import (
    NEW_JOB_COLUMNS,
    OWN_JOB_COLUMNS,
    OWN_UNTIMED_COLUMNS,
    new_job_snapshot_tails,
    new_job_values,
    own_batch_values,
    shared_job_values,
)
from jobwheel.server.storage.dialect import NOTIFY_CHANNEL_SQL
from jobwheel.server.storage.schema import jobs


def _insert_jobs(columns: Sequence[str], own: Sequence[str], events: bool = False) -> str:
    """$1: how many; $2..: an array per `own` column (in their order), then a scalar per
    other column (in `columns` order). Returns the seqs, in input order. With `events`, also
    their ENQUEUED events, as _INSERT_EVENTS writes them, from the parameters that follow
    (type, time, labels and tails of runs, each job's run, notify_token): then returns the
    seqs and the last revision, in one statement that commits on its own."""
    arrays = {name: f"${i}" for i, name in enumerate(own, 2)}
    others = [c for c in columns if c not in own]
    scalars = {name: f"${i}" for i, name in enumerate(others, 2 + len(own))}
    values = ", ".join(
        f"t.{name}" if name in arrays else f"{scalars[name]}::{pg_array_type(jobs.c[name].type)}"
        for name in columns
    )
    unnest = ", ".join(f"{arrays[name]}::{pg_array_type(jobs.c[name].type)}[]" for name in own)
    head = f"""
WITH taken AS (
    SELECT {PG_NEXT_SEQ} AS seq
    FROM generate_series(1, $1::int4)
), numbered AS (
    SELECT seq, row_number() OVER (ORDER BY seq) AS ord FROM taken
), t AS (
    SELECT * FROM unnest({unnest}) WITH ORDINALITY AS t({", ".join(own)}, ord)
), added AS (
    INSERT INTO {jobs.name} (seq, {", ".join(columns)})
    SELECT numbered.seq, {values}
    FROM t JOIN numbered USING (ord)
)"""
    if not events:
        return f"{head}\nSELECT array_agg(seq ORDER BY seq) FROM numbered\n"
    k = 2 + len(own) + len(others)  # type, time, labels, tails, runs, token
    snapshot = _snapshot("t.id", f"(${k + 2}::text[])[r.run]", "numbered.seq", f"${k + 3}", "r")
    return f"""{head}, head AS ({_TAKE_REVISIONS}), logged AS (
    INSERT INTO events ({", ".join(EVENT_COLUMNS)})
    SELECT head.revision - $1::int8 + t.ord, t.id, ${k}::text, ${k + 1}::int8, {snapshot}
    FROM head, t JOIN numbered USING (ord)
    JOIN unnest(${k + 4}::int4[]) WITH ORDINALITY AS r(run, ord) USING (ord)
)
SELECT (SELECT array_agg(seq ORDER BY seq) FROM numbered), revision, {_notify(f"${k + 5}")}
FROM head
"""


# the head of the event log: the next $1 revisions, locked until commit
_TAKE_REVISIONS = (
    "UPDATE event_head SET revision = revision + $1::int8 WHERE id = 1 RETURNING revision"
)


def _snapshot(job_id: str, labels: str, seq: str, tails: str, runs: str) -> str:
    """The snapshot text storage.convert.new_job_snapshots writes for a job without a key
    (to_json spells an id without control characters as orjson does); `tails`: an array
    parameter of the runs' tails, `runs`: the row source that has each job's run (1-based)."""
    return (
        f"""'{{"id":' || to_json({job_id})::text || ',"idempotency_key":null,"labels":' """
        f"""|| {labels} || ',"seq":' || {seq} || ({tails}::text[])[{runs}.run]"""
    )


def _notify(token: str) -> str:
    """Tells other replicas of the commit (revision and the writer's notify_token)."""
    return f"pg_notify({NOTIFY_CHANNEL_SQL}, revision::text || ' ' || {token}::text)"


# $1: how many; $2: type; $3: time; $4: ids; $5: seqs; $6: labels and $7: tails, of runs of
# consecutive jobs; $8: each job's run (1-based into $6 and $7); $9: the writer's notify_token.
# Last in the transaction: the head row stays locked until commit.
_INSERT_EVENTS = f"""
WITH head AS ({_TAKE_REVISIONS}), added AS (
    INSERT INTO events ({", ".join(EVENT_COLUMNS)})
    SELECT head.revision - $1::int8 + t.ord, t.id, $2::text, $3::int8,
        {_snapshot("t.id", "($6::text[])[t.run]", "t.seq", "$7", "t")}
    FROM head, unnest($4::text[], $5::int8[], $8::int4[]) WITH ORDINALITY AS t(id, seq, run, ord)
)
SELECT revision, {_notify("$9")} FROM head
"""


async def pg_enqueue_alike(
    db: Any,
    token: str,
    columns: Sequence[str],
    own: Sequence[str],
    values: tuple[Any, ...],
    rows: list[tuple[Any, ...]],
    tails: list[tuple[int, str]],
    event_type: str,
    now: int,
) -> tuple[list[int], int]:
    """Inserts jobs without idempotency keys whose values for `columns` are `values` but in
    the `own` columns (`rows`: theirs, in `own` order), and their events (`tails`: see
    new_job_snapshot_tails; the jobs' labels are values' "labels"); returns the jobs' seqs
    and the last revision. On asyncpg's connection `db` with no transaction open: the
    statement commits on its own (pg_cycle.driver_statement); `token`: the writing engine's
    notify_token."""
    shared = [value for name, value in zip(columns, values, strict=True) if name not in own]
    arrays = [list(column) for column in zip(*rows, strict=True)]
    sql = _insert_jobs_sql(tuple(columns), tuple(own), True)
    runs = [k for k, (n, _) in enumerate(tails, 1) for _ in range(n)]
    labels = [values[columns.index("labels")]] * len(tails)
    events = (event_type, now, labels, [t for _, t in tails], runs, token)
    seqs, last, _ = await db.fetchrow(sql, len(rows), *arrays, *shared, *events)
    return seqs, int(last)


async def pg_rehearse_enqueue(db: Any) -> None:
    """Runs pg_enqueue_alike's statement, in both of its shapes (the jobs' times shared or
    their own), with no jobs on asyncpg's connection `db`, in the caller's transaction (to be
    rolled back: it locks the event log's head): the backend reads the catalog of the tables
    and indexes it touches and asyncpg prepares it (a new store's first enqueue took 26-34 ms
    on a connection that had not, 2.6-3.2 ms on one that had)."""
    columns = tuple(NEW_JOB_COLUMNS)
    no_events: tuple[Any, ...] = ("", 0, [], [], [], "")  # type, time, labels, tails, runs, token
    for own in (OWN_UNTIMED_COLUMNS, OWN_JOB_COLUMNS):
        shared = [None] * (len(columns) - len(own))
        await db.fetchrow(
            _insert_jobs_sql(columns, own, True), 0, *([[]] * len(own)), *shared, *no_events
        )


_STATEMENTS: dict[tuple[tuple[str, ...], tuple[str, ...], bool], str] = {}


def _insert_jobs_sql(columns: tuple[str, ...], own: tuple[str, ...], events: bool = False) -> str:
    found = _STATEMENTS.get((columns, own, events))
    if found is None:
        found = _STATEMENTS[(columns, own, events)] = _insert_jobs(columns, own, events)
    return found


class ChunkedEnqueue:
    """Jobs without idempotency keys created chunk by chunk in one transaction (see
    Store.insert_new_jobs_in_chunks): `statement` gives each chunk's insert of its jobs, which
    `inserted` is told the seqs of; `append_events` then writes all their ENQUEUED events in
    one statement, last in the transaction (the event log's head stays locked from there to
    the commit)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.seqs: list[int] = []
        self._runs: list[int] = []  # each job's run (1-based)
        self._labels: list[str] = []  # each run's labels and tail (_INSERT_EVENTS' $6, $7)
        self._tails: list[str] = []

    def statement(self, chunk: Sequence[NewJob], created: list[Job]) -> tuple[str, list[Any]]:
        """The insert of `chunk` (`created`: job_from_new of each) as (SQL, arguments); it
        returns the jobs' seqs in order, as pg_enqueue_alike's does. Jobs alike (see
        shared_job_values) send what they share once; others send every column."""
        columns = tuple(NEW_JOB_COLUMNS)
        shared = shared_job_values(chunk)
        scalars: list[Any] = []
        if shared is not None:
            own, rows = own_batch_values(chunk)
            scalars = [v for name, v in zip(columns, shared, strict=True) if name not in own]
            labels = shared[_LABELS]
            for count, tail in new_job_snapshot_tails(created, alike=True):
                self._run(labels, tail, count)
        else:
            own, rows = columns, [new_job_values(job) for job in chunk]
            tails = new_job_snapshot_tails(created)
            each = [tail for count, tail in tails for _ in range(count)]
            for row, tail in zip(rows, each, strict=True):
                self._run(row[_LABELS], tail, 1)
        self.ids.extend(job.id for job in chunk)
        args = [len(rows), *columns_of(rows, len(own)), *scalars]
        return _insert_jobs_sql(columns, tuple(own)), args

    def _run(self, labels: str, tail: str, count: int) -> None:
        if not self._runs or labels != self._labels[-1] or tail != self._tails[-1]:
            self._labels.append(labels)
            self._tails.append(tail)
        self._runs.extend([len(self._labels)] * count)

    def inserted(self, seqs: list[int]) -> None:
        self.seqs.extend(seqs)

    async def append_events(self, db: Any, token: str, event_type: str, now: int) -> int:
        """The ENQUEUED events of every job inserted, revisions in insert order; returns the
        last revision. `token`: the writing engine's notify_token."""
        params = (len(self.ids), event_type, now, self.ids, self.seqs, self._labels)
        return int(await db.fetchval(_INSERT_EVENTS, *params, self._tails, self._runs, token))


_LABELS = NEW_JOB_COLUMNS.index("labels")
