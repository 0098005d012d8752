"""Table definitions, shared by SQLite and PostgreSQL.

Times are BIGINT microseconds since the epoch (see model.py). JSON documents are TEXT that the
store encodes itself, so both dialects hold byte-identical values; the few queries that look
inside a document go through dialect.py.
"""

from __future__ import annotations

from typing import Any

from jobwheel.server.model import JobState
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    false,
    literal,
    or_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

# Run-time columns carry server defaults: inserts bind only what an enqueue sets.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# On SQLite an INTEGER PRIMARY KEY is the rowid itself (no second b-tree); BIGINT would not be.
SeqType = BigInteger().with_variant(Integer, "sqlite")
Micros = BigInteger

jobs = Table(
    "jobs",
    metadata,
    # AUTOINCREMENT on SQLite: seq never reuses a deleted job's value, so page cursors and
    # "newest first" stay meaningful after deletes.
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("queue", String(255), nullable=False),
    Column("task", String(255), nullable=False),
    Column("payload", Text, nullable=False),
    Column("labels", Text, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("schedule", Text, nullable=True),
    Column("retry_policy", Text, nullable=False),
    Column("timeout", Micros, nullable=True),
    Column("idempotency_key", String(255), nullable=True),  # unique: uq_jobs_idempotency_key
    Column("http", Text, nullable=True),
    Column("create_time", Micros, nullable=False),
    Column("update_time", Micros, nullable=False),
    Column("next_run_time", Micros, nullable=True),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("execution_count", Integer, nullable=False, server_default="0"),
    Column("released_attempts", Integer, nullable=False, server_default="0"),
    Column("start_time", Micros, nullable=True),
    Column("end_time", Micros, nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("result", Text, nullable=True),
    Column("cancel_reason", Text, nullable=False, server_default=""),
    Column("skipped_count", Integer, nullable=False, server_default="0"),
    Column("progress", Text, nullable=True),
    Column("worker_id", String(255), nullable=False, server_default=""),
    Column("lease_expire_time", Micros, nullable=True),
    # Derived from schedule at insert: lets list filters avoid parsing the schedule document.
    Column("recurring", Boolean, nullable=False, server_default=false()),
    # W3C traceparent of the enqueue ('' without tracing): attempts continue that trace
    Column("traceparent", String(55), nullable=False, server_default=""),
    # The fencing number of the current attempt's lease: every claim adds one, so it never
    # repeats for a job (attempt starts again at each execution)
    Column("epoch", Integer, nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)

# Each index is paid for on every insert, so only the access paths the service uses. A state
# change rewrites the entries of every index on a changed column (on PostgreSQL of every index:
# state is indexed, so it is never a HOT update), unless the index is partial and neither
# version of the row is in it: the indexes that serve one kind of job hold only those. A query
# reaches a partial index when its conditions imply the predicate, which both planners prove
# only from constants: states go into the SQL as literals (state_is). SQLite proves little
# more than "the same expression", or one branch of an OR: its predicate for several states
# is an OR of equalities, which state_is writes there, and one of those states implies it.
_QUEUED = (JobState.QUEUED.value,)
_WAITING = (JobState.SCHEDULED.value, JobState.RETRYING.value)


def _state_in(values: tuple[str, ...], *, sqlite: bool) -> ColumnElement[bool]:
    if len(values) == 1:
        return jobs.c.state == literal(values[0], literal_execute=True)
    if sqlite:
        return or_(*(jobs.c.state == literal(v, literal_execute=True) for v in values))
    return jobs.c.state.in_(bindparam(None, list(values), expanding=True, literal_execute=True))


Index(  # due soon
    "ix_jobs_due",
    jobs.c.state,
    jobs.c.next_run_time,
    postgresql_where=_state_in(_WAITING, sqlite=False),
    sqlite_where=_state_in(_WAITING, sqlite=True),
)
# dispatch: best job of a queue, FIFO within a priority. Without the state, which its
# predicate fixes: a key column more to compare at each step of every insert's descent cost
# PostgreSQL a tenth of a batch enqueue's time (version 7).
ix_jobs_dispatch = Index(
    "ix_jobs_dispatch",
    jobs.c.queue,
    jobs.c.priority.desc(),
    jobs.c.seq,
    postgresql_where=_state_in(_QUEUED, sqlite=False),
    sqlite_where=_state_in(_QUEUED, sqlite=True),
)
Index("ix_jobs_state_seq", jobs.c.state, jobs.c.seq)  # list by state, newest first
# list by queue; with the state, counts by queue and state (ListQueues) read only the index
# (the dispatch index served them while it held every job)
Index("ix_jobs_queue_seq", jobs.c.queue, jobs.c.seq, jobs.c.state)
Index("ix_jobs_task_seq", jobs.c.task, jobs.c.seq)  # list by task
# NULLs never collide in a UNIQUE index on either dialect: jobs without a key are free, and not
# in it. An ON CONFLICT naming it repeats the predicate (KEYED); a query implies the predicate
# by comparing the key with anything but IS.
_keyed = jobs.c.idempotency_key.isnot(None)
Index(
    "uq_jobs_idempotency_key",
    jobs.c.idempotency_key,
    unique=True,
    postgresql_where=_keyed,
    sqlite_where=_keyed,
)
KEYED = "idempotency_key IS NOT NULL"
# Retention pruning of finished jobs; partial, so inserting and running jobs skip it.
_finished = jobs.c.end_time.isnot(None)
Index("ix_jobs_end_time", jobs.c.end_time, sqlite_where=_finished, postgresql_where=_finished)


class StateIs(ColumnElement[bool]):
    """jobs.state is one of `states`, as the partial indexes' predicates write it (see above):
    an IN list on PostgreSQL, an OR of equalities on SQLite, the states as constants."""

    # the states are part of a statement's cache key
    _traverse_internals = [("states", InternalTraversal.dp_plain_obj)]  # noqa: RUF012
    type = Boolean()
    _is_implicitly_boolean = True  # a condition, not a column SQLite compares with 1

    def __init__(self, states: tuple[str, ...]) -> None:
        self.states = states


@compiles(StateIs)
def _state_is_default(element: StateIs, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(_state_in(element.states, sqlite=False), **kw)


@compiles(StateIs, "sqlite")
def _state_is_sqlite(element: StateIs, compiler: SQLCompiler, **kw: Any) -> str:
    condition = _state_in(element.states, sqlite=True)
    return compiler.process(condition.self_group(against=operators.and_), **kw)


class Unindexed(ColumnElement[Any]):
    """A column that SQLite's planner may not search by (its unary +), for a condition that
    only filters what another index found; the column itself elsewhere. SQLite runs no
    ANALYZE here, so it guesses, and prefers an equality's index to a range's."""

    inherit_cache = True

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type

    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012


@compiles(Unindexed)
def _unindexed_default(element: Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(Unindexed, "sqlite")
def _unindexed_sqlite(element: Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.column, **kw)


def state_is(*states: JobState) -> ColumnElement[bool]:
    """jobs.state is one of `states`, in the form the partial indexes' predicates take."""
    return StateIs(tuple(s.value for s in states))


attempts = Table(
    "attempts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("job_id", String(36), nullable=False),
    Column("execution", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("start_time", Micros, nullable=False),
    Column("end_time", Micros, nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("error", Text, nullable=False, server_default=""),
    Column("worker_id", String(255), nullable=False, server_default=""),
    Column("result", Text, nullable=True),
    # On SQLite only. On PostgreSQL the check of each attempt inserted (a key-share lock of
    # its job's row) cost a tenth of a drained job's database time; the job's row is locked
    # by the claim that inserts it, and deleting jobs deletes their attempts (management.py).
    ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE").ddl_if(dialect="sqlite"),
)
Index("ix_attempts_job", attempts.c.job_id, attempts.c.execution, attempts.c.number)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

# The event log behind WatchJobs: one row per change, `revision` gap-free and increasing in
# commit order (writers take the next revisions from `event_head` under its row lock, at the
# end of their transaction). `job` is the job after the change, without its payload (which
# never changes; readers join it from `jobs`).
events = Table(
    "events",
    metadata,
    Column("revision", SeqType, primary_key=True, autoincrement=False),
    Column("job_id", String(36), nullable=False),
    Column("type", String(24), nullable=False),
    Column("time", Micros, nullable=False),
    Column("job", Text, nullable=False),
)
Index("ix_events_time", events.c.time)
# one job's timeline (the dashboard's job page)
ix_events_job = Index("ix_events_job", events.c.job_id, events.c.revision)

# Row 1: the newest revision. Row 2: the revision up to which events were handed to event
# subscriptions (deliveries are created idempotently, then this advances).
event_head = Table(
    "event_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

# Queue settings; a queue without a row has the defaults (not paused, server concurrency,
# no rate limit).
queues = Table(
    "queues",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("max_concurrency", Integer, nullable=True),
    Column("max_dispatches_per_second", Float, nullable=False, server_default="0"),
)

# GetJobStats: recent successful attempts
_ended = attempts.c.end_time.isnot(None)  # implied by the queries' end_time >= since
Index("ix_attempts_end_time", attempts.c.end_time, postgresql_where=_ended, sqlite_where=_ended)

# Event subscriptions: URLs that receive job events (the secret signs the deliveries).
event_subscriptions = Table(
    "event_subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),  # JSON list of EventType values
    Column("secret", Text, nullable=False),
    Column("create_time", Micros, nullable=False),
    # events after this revision are delivered
    Column("from_revision", BigInteger, nullable=False),
)

# Who runs jobs (ListWorkers), shared by replicas: each server's in-process handlers (kind
# "server", refreshed by its upkeep) and the remote workers it saw lease or heartbeat
# (kind "remote", written in batches). Rows not seen for a while are pruned.
workers = Table(
    "workers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("last_seen", Micros, nullable=False),
    Column("queues", Text, nullable=False),  # JSON list; [] = any queue
    Column("tasks", Text, nullable=False),  # JSON list; for a remote worker [] = any task
    Column("server", String(255), nullable=False, server_default=""),  # which replica saw it
    Column("info", Text, nullable=False, server_default="{}"),  # JSON: version, listen, ...
)
Index("ix_workers_last_seen", workers.c.last_seen)
