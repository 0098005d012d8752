"""Versioned schema migrations.

A fresh database gets the current schema from `schema.metadata` and is stamped with the newest
version; an existing one runs each step after its stamp, one transaction per step (DDL is
transactional on both SQLite and PostgreSQL, so a failed step leaves the previous version
intact). Replicas starting together on PostgreSQL serialize on an advisory lock; on SQLite the
BEGIN IMMEDIATE of the write connection does the same.

To change the schema: edit schema.py (the shape a fresh database gets) AND append a step that
takes a database of the previous version to the same shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from jobwheel.server.model import JobState
from jobwheel.server.storage.dialect import Dialect, Engines
from jobwheel.server.storage.outage import is_unreachable
from jobwheel.server.storage.schema import (
    attempts,
    event_head,
    ix_events_job,
    ix_jobs_dispatch,
    jobs,
    metadata,
    schema_version,
    workers,
)
from sqlalchemy import Connection, Index, inspect, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import (
    ReflectedForeignKeyConstraint,
    ReflectedUniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex


class SchemaVersionError(RuntimeError):
    """The database's schema cannot be used by this version of the code."""


class ReadOnlyDatabase(RuntimeError):
    """The database (or, for SQLite, its file or directory) cannot be written."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[AsyncConnection, Dialect], Awaitable[None]]


async def _create(conn: AsyncConnection) -> None:
    await conn.run_sync(metadata.create_all)
    await conn.execute(event_head.insert(), [{"id": 1, "revision": 0}, {"id": 2, "revision": 0}])


async def _initial(conn: AsyncConnection, _dialect: Dialect) -> None:
    # Only reached by a database stamped 0, which no released version writes; kept so the list
    # reads as the full history.
    await _create(conn)


async def _released_attempts(conn: AsyncConnection, _dialect: Dialect) -> None:
    await conn.execute(
        text("ALTER TABLE jobs ADD COLUMN released_attempts INTEGER NOT NULL DEFAULT 0")
    )


async def _traces_and_workers(conn: AsyncConnection, _dialect: Dialect) -> None:
    await conn.execute(
        text("ALTER TABLE jobs ADD COLUMN traceparent VARCHAR(55) NOT NULL DEFAULT ''")
    )
    await conn.run_sync(lambda sync: workers.create(sync))  # with its index


async def _index_events_by_job(conn: AsyncConnection, _dialect: Dialect) -> None:
    await conn.run_sync(lambda sync: ix_events_job.create(sync, checkfirst=True))


# These indexes became partial (and the queue index took the state, for the counts the whole
# dispatch index served): in version 5 on PostgreSQL (where attempts also lost their foreign
# key), in version 6 on SQLite
_NARROWED = {
    jobs: ("ix_jobs_due", "ix_jobs_dispatch", "uq_jobs_idempotency_key", "ix_jobs_queue_seq"),
    attempts: ("ix_attempts_end_time",),
}


def _unique_constraints_of_jobs(sync: Connection) -> list[ReflectedUniqueConstraint]:
    return inspect(sync).get_unique_constraints(jobs.name)


def _foreign_keys_of_attempts(sync: Connection) -> list[ReflectedForeignKeyConstraint]:
    return inspect(sync).get_foreign_keys(attempts.name)


async def _narrow_indexes(conn: AsyncConnection, dialect: Dialect) -> None:
    if dialect.name != "postgresql":
        return  # SQLite's schema is as it was
    for fk in await conn.run_sync(_foreign_keys_of_attempts):
        await conn.execute(text(f'ALTER TABLE attempts DROP CONSTRAINT "{fk["name"]}"'))
    # the unique constraint that held idempotency keys (by whatever name it was created)
    for uq in await conn.run_sync(_unique_constraints_of_jobs):
        if uq["column_names"] == ["idempotency_key"]:
            await conn.execute(text(f'ALTER TABLE jobs DROP CONSTRAINT "{uq["name"]}"'))
    for index in _narrowed():
        await _rebuild(conn, index)


def _narrowed() -> Iterator[Index]:
    """The indexes of _NARROWED, as schema.py defines them."""
    for table, names in _NARROWED.items():
        yield from (index for index in table.indexes if index.name in names)


async def _rebuild(conn: AsyncConnection, index: Index) -> None:
    """Replaces `index` (whatever its old definition) by the one schema.py defines.

    On PostgreSQL the new index is built under another name first, then the old one dropped
    and the new one renamed: the build locks the table against writes only (SHARE), so other
    replicas' reads go on meanwhile; the drop's lock (ACCESS EXCLUSIVE, which stops reads too)
    is taken just before the step commits. A step's earlier ALTER TABLE takes that lock anyway
    (version 5)."""
    if conn.dialect.name != "postgresql":
        await conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
        await conn.run_sync(index.create)
        return
    building = f"{index.name}_rebuilt"
    ddl = str(CreateIndex(index).compile(dialect=conn.dialect))
    prefix = f"INDEX {index.name} "
    assert prefix in ddl, ddl
    await conn.execute(text(ddl.replace(prefix, f"INDEX {building} ", 1)))
    await conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    await conn.execute(text(f"ALTER INDEX {building} RENAME TO {index.name}"))


def _table_unique_keys_of_jobs(sync: Connection) -> list[list[str]]:
    """The columns of each UNIQUE constraint of the jobs table itself (SQLite's autoindexes)."""
    indexes = sync.exec_driver_sql("SELECT name, origin FROM pragma_index_list('jobs')").all()
    info = "SELECT name FROM pragma_index_info(?) ORDER BY seqno"
    return [
        [c for (c,) in sync.exec_driver_sql(info, (name,))]
        for name, origin in indexes
        if origin == "u"
    ]


async def _narrow_sqlite_indexes(conn: AsyncConnection, dialect: Dialect) -> None:
    if dialect.name != "sqlite":
        return  # version 5 narrowed PostgreSQL's
    # A database made before version 5 holds its keys unique by the table's own constraint,
    # whose index only rebuilding the table would drop: it stays whole there.
    keyed_by_table = ["idempotency_key"] in await conn.run_sync(_table_unique_keys_of_jobs)
    for index in _narrowed():
        if keyed_by_table and index.name == "uq_jobs_idempotency_key":
            await conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
        else:
            await _rebuild(conn, index)


async def _dispatch_without_state(conn: AsyncConnection, _dialect: Dialect) -> None:
    await _rebuild(conn, ix_jobs_dispatch)


async def _epochs(conn: AsyncConnection, _dialect: Dialect) -> None:
    await conn.execute(text("ALTER TABLE jobs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0"))
    # the leases held now keep their epoch (their attempt number); the others count from here
    running = JobState.RUNNING.value
    await conn.execute(text(f"UPDATE jobs SET epoch = attempt WHERE state = '{running}'"))


async def _epochs_past_attempts(conn: AsyncConnection, _dialect: Dialect) -> None:
    # version 8 started the epoch of a job without a lease at 0, so a later lease could carry
    # the number an earlier attempt's lease had (its attempt number, up to version 7), and a
    # late report of that attempt passed the fence; those jobs now count on from the highest
    # attempt number on record (the leases held keep theirs)
    running = JobState.RUNNING.value
    highest = "(SELECT MAX(a.number) FROM attempts a WHERE a.job_id = jobs.id)"
    await conn.execute(
        text(
            f"UPDATE jobs SET epoch = {highest}"
            f" WHERE state <> '{running}' AND epoch < COALESCE({highest}, 0)"
        )
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _initial),
    Migration(2, "jobs.released_attempts: attempts a graceful stop released", _released_attempts),
    Migration(3, "trace context of jobs; the workers table", _traces_and_workers),
    Migration(4, "index the event log by job", _index_events_by_job),
    Migration(
        5,
        "PostgreSQL: partial indexes where a state change need not write; attempts without "
        "a foreign key",
        _narrow_indexes,
    ),
    Migration(6, "SQLite: the partial indexes of version 5", _narrow_sqlite_indexes),
    Migration(
        7, "the dispatch index without the state its predicate fixes", _dispatch_without_state
    ),
    Migration(8, "jobs.epoch: a lease's fencing number, never repeated for a job", _epochs),
    Migration(
        9, "epochs past the attempt numbers of leases before version 8", _epochs_past_attempts
    ),
)


def latest_version(steps: Sequence[Migration] = MIGRATIONS) -> int:
    return steps[-1].version


def _check_steps(steps: Sequence[Migration]) -> None:
    versions = [s.version for s in steps]
    if not versions or versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3, ... without gaps: {versions}")


def _has_version_table(sync_conn: Connection) -> bool:
    return inspect(sync_conn).has_table(schema_version.name)


async def current_version(conn: AsyncConnection) -> int | None:
    """The stamped version, or None for a database jobwheel has never set up."""
    if not await conn.run_sync(_has_version_table):
        return None
    versions = (await conn.execute(select(schema_version.c.version))).scalars().all()
    if len(versions) != 1:
        raise SchemaVersionError(
            f"table {schema_version.name} must hold exactly one row, found {len(versions)}"
        )
    return int(versions[0])


async def migrate(engines: Engines, steps: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database to the newest version in `steps`; returns that version."""
    _check_steps(steps)
    for delay in LOCKED_RETRY_DELAYS:
        try:
            return await _migrate(engines, steps)
        except sa_exc.OperationalError as exc:
            if not _locked(exc):
                raise
        await asyncio.sleep(delay)
    return await _migrate(engines, steps)


# SQLite answers "database is locked" without waiting out busy_timeout in a few cases (several
# connections opening a brand-new file while one of them switches it to WAL): retry a few times.
LOCKED_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def _locked(exc: sa_exc.OperationalError) -> bool:
    return "database is locked" in str(exc.orig)


async def _migrate(engines: Engines, steps: Sequence[Migration]) -> int:
    latest = latest_version(steps)
    lock = engines.dialect.migration_lock()
    while True:
        async with engines.write.begin() as conn:
            if lock is not None:
                await conn.execute(lock)
            current = await current_version(conn)
            if current is None:
                await _create(conn)
                await conn.execute(schema_version.insert().values(version=latest))
                return latest
            if current > latest:
                raise SchemaVersionError(
                    f"database schema version {current} is newer than this jobwheel "
                    f"understands ({latest}); upgrade jobwheel or use another database"
                )
            if current == latest:
                return current
            step = steps[current]  # versions are 1..n, so this is version current + 1
            await step.apply(conn, engines.dialect)
            await conn.execute(schema_version.update().values(version=step.version))


async def check_writable(engines: Engines) -> None:
    """A no-op write, so a read-only database refuses to start instead of failing every
    write later. (An up-to-date schema is only read by `migrate`.)"""
    try:
        async with engines.write.begin() as conn:
            await conn.execute(schema_version.update().values(version=schema_version.c.version))
    except sa_exc.DBAPIError as exc:
        if is_unreachable(exc):
            raise
        cause = str(exc.orig).strip().splitlines()[0]
        where = engines.write.url.database or "the database"
        need = (
            "the server writes to the database file and creates files next to it"
            if engines.dialect.single_writer
            else "the server needs a database it can write to"
        )
        raise ReadOnlyDatabase(f"cannot write to {where} ({cause}): {need}") from exc
