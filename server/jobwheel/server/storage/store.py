"""The Store: job creation and reads here; the other parts in their own modules (see base.py
for transactions)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from jobwheel.server.model import Event, EventType, Job, JobFilter, NewJob
from jobwheel.server.storage import paging
from jobwheel.server.storage.bulk_writes import (
    and_commit,
    begun,
    events_of_new_jobs,
    in_sqlite_thread,
    in_write_transaction,
    json_rows,
    roll_back,
    shared_params,
    sqlite_append_events,
    sqlite_enqueue_json,
    sqlite_insert_jobs,
    sqlite_insert_shared,
)
from jobwheel.server.storage.convert import (
    JOB_COLUMNS,
    NEW_JOB_COLUMNS,
    job_from_new,
    job_from_row,
    job_from_values,
    new_job_snapshot_tails,
    new_job_snapshots,
    new_job_values,
    own_batch_values,
    shared_job_values,
)
from jobwheel.server.storage.dialect import notify_token
from jobwheel.server.storage.events import EventLog, append_events
from jobwheel.server.storage.filters import id_range, job_conditions
from jobwheel.server.storage.history import History
from jobwheel.server.storage.leases import Leases
from jobwheel.server.storage.management import Management
from jobwheel.server.storage.overview import Overview
from jobwheel.server.storage.pg_cycle import driver_statement, driver_transaction
from jobwheel.server.storage.pg_enqueue import ChunkedEnqueue, pg_enqueue_alike
from jobwheel.server.storage.queues import Queues
from jobwheel.server.storage.schema import jobs
from jobwheel.server.storage.subscriptions import Subscriptions
from jobwheel.server.storage.workers import Workers
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection


class Store(Leases, History, EventLog, Management, Queues, Subscriptions, Workers, Overview):
    """Every database access of the server, for SQLite and PostgreSQL alike."""

    # -- jobs: create and read -----------------------------------------------------------------

    async def insert_jobs(self, new_jobs: Sequence[NewJob]) -> list[tuple[Job, bool]]:
        """Insert a batch in one transaction; returns (job, already_existed) in input order.

        A job whose idempotency key is already stored, or used earlier in the batch, is not
        inserted: the job holding the key is returned with True.
        """
        results: list[tuple[Job, bool] | None] = [None] * len(new_jobs)
        first_with_key: dict[str, int] = {}
        repeats: list[tuple[int, int]] = []  # (index, index of the first job with its key)
        candidates: list[int] = []
        for i, job in enumerate(new_jobs):
            key = job.idempotency_key
            if key is None:
                candidates.append(i)
            elif key in first_with_key:
                repeats.append((i, first_with_key[key]))
            else:
                first_with_key[key] = i
                candidates.append(i)
        committed: list[Event] = []
        if candidates and not first_with_key:  # no keys to look up: every job a candidate
            if self.dialect.single_writer:
                # SQLite: the whole transaction in one driver-thread hop; rows converted before
                # taking the write lock, so a concurrent batch's database work overlaps
                found: list[Event] | None = await self._sqlite_insert_new(new_jobs)
            else:  # PostgreSQL: the jobs alike, or None
                found = await self._pg_insert_alike(new_jobs)
            if found is not None:
                self._emit(found)
                return [(event.job, False) for event in found]
        rows = {i: new_job_values(new_jobs[i]) for i in candidates}
        fresh = {i: job_from_new(new_jobs[i]) for i in candidates}
        if candidates:
            async with self._enqueue_write() as conn:
                await self.dialect.lock_keys(conn, list(first_with_key))
                existing = await self._jobs_by_key(conn, first_with_key)
                await self._expire_keys(conn, existing, new_jobs[candidates[0]].create_time)
                pending = [i for i in candidates if new_jobs[i].idempotency_key not in existing]
                raced: list[int] = []
                if pending:
                    seqs = await self.dialect.insert_jobs(
                        conn, NEW_JOB_COLUMNS, [rows[i] for i in pending]
                    )
                    for i, seq in zip(pending, seqs, strict=True):
                        if seq is None:
                            raced.append(i)
                        else:
                            fresh[i].seq = seq
                            results[i] = (fresh[i], False)
                # Skipped: the key's owner committed after our look-up (PostgreSQL only, and
                # only from a writer that did not lock the key first, such as a replica of an
                # earlier version; on SQLite BEGIN IMMEDIATE excludes other writers).
                if raced:
                    keys = [new_jobs[i].idempotency_key or "" for i in raced]
                    existing.update(await self._jobs_by_key(conn, keys))
                created = [(EventType.ENQUEUED, r[0]) for i in pending if (r := results[i])]
                if created:
                    snapshots = new_job_snapshots([job for _, job in created])
                    committed = await append_events(
                        conn, created, created[0][1].create_time, snapshots
                    )
            self._emit(committed)
            for i in candidates:
                key = new_jobs[i].idempotency_key
                if results[i] is None:
                    if key is None or key not in existing:
                        raise RuntimeError(f"insert of job {new_jobs[i].id} was ignored")
                    results[i] = (existing[key], True)

        for i, first in repeats:
            first_result = results[first]
            assert first_result is not None
            results[i] = (first_result[0], True)
        return [r for r in results if r is not None]

    async def _sqlite_insert_new(self, new_jobs: Sequence[NewJob]) -> list[Event]:
        """Inserts jobs without idempotency keys on SQLite; returns their ENQUEUED events."""
        jobs_in = [job_from_new(job) for job in new_jobs]
        now = jobs_in[0].create_time
        work = _sqlite_enqueue_work(new_jobs, jobs_in, now)
        async with self._raw_write() as conn:
            last = await in_sqlite_thread(conn, in_write_transaction, work)
        return _enqueued(jobs_in, last, now)

    async def _pg_insert_alike(self, new_jobs: Sequence[NewJob]) -> list[Event] | None:
        """Inserts jobs without idempotency keys on PostgreSQL when they are alike (see
        pg_enqueue.py); returns their ENQUEUED events, or None (nothing done) when not."""
        shared = shared_job_values(new_jobs)
        if shared is None or not events_of_new_jobs([job.id for job in new_jobs]):
            return None
        jobs_in = [job_from_new(job) for job in new_jobs]
        now = jobs_in[0].create_time
        own, rows = own_batch_values(new_jobs)
        tails = new_job_snapshot_tails(jobs_in, alike=True)
        enqueued = EventType.ENQUEUED
        async with self._enqueue_write(begun=False) as conn:
            token = notify_token(conn.sync_engine)
            async with driver_statement(conn) as db:
                seqs, last = await pg_enqueue_alike(
                    db, token, NEW_JOB_COLUMNS, own, shared, rows, tails, enqueued.value, now
                )
        for job, seq in zip(jobs_in, seqs, strict=True):
            job.seq = seq
        return _enqueued(jobs_in, last, now)

    def chunks_now(self) -> bool:
        """Whether a large batch should go in chunks now (insert_new_jobs_in_chunks) rather
        than whole through a group commit: on PostgreSQL always; on SQLite while the single
        writer is free (chunks hold it from the first insert to the commit, so a batch of
        another caller would wait behind one's validation, where a group commit takes both
        at once), and not in memory."""
        if not self.dialect.single_writer:
            return True
        return self._writer is not None and not self._writer.all_lent

    async def insert_new_jobs_in_chunks(self, chunks: Iterator[Sequence[NewJob]]) -> list[Job]:
        """Creates jobs without idempotency keys in one transaction, chunk by chunk; returns
        them as created, in order. Each chunk's insert runs in the database (SQLite: in the
        driver's thread) while the event loop takes the next chunk from `chunks`: a caller
        that validates as it yields overlaps its checks with the inserts. If `chunks` raises,
        nothing is stored and the exception propagates. Empty chunks are passed over.
        PostgreSQL: the ids must hold no control character (events_of_new_jobs: ValueError)."""
        chunks = (chunk for chunk in chunks if chunk)
        if self.dialect.single_writer:
            created, last = await self._sqlite_insert_in_chunks(chunks)
        else:
            created, last = await self._pg_insert_in_chunks(chunks)
        if created:
            self._emit(_enqueued(created, last, created[0].create_time))
        return created

    async def _sqlite_insert_in_chunks(
        self, chunks: Iterator[Sequence[NewJob]]
    ) -> tuple[list[Job], int]:
        """insert_new_jobs_in_chunks on SQLite: (the jobs, the last revision). Each chunk's
        jobs and events go in with one hop to the driver's thread (_sqlite_enqueue_work)."""
        created: list[Job] = []
        # the first chunk is made before the writer is taken: other writes go on meanwhile
        chunk = next(chunks, None)
        if chunk is None:
            return created, 0
        now = chunk[0].create_time  # the events' time, as one insert of them all has it
        async with self._raw_write() as conn:
            pending: asyncio.Future[int] | None = None
            try:
                while chunk is not None:
                    jobs_in = [job_from_new(job) for job in chunk]
                    work = _sqlite_enqueue_work(chunk, jobs_in, now)
                    if pending is None:
                        pending = asyncio.ensure_future(in_sqlite_thread(conn, begun, work))
                    else:
                        await pending
                        pending = asyncio.ensure_future(in_sqlite_thread(conn, work))
                    await asyncio.sleep(0)  # its task hands it over before next() takes the loop
                    created.extend(jobs_in)
                    chunk = next(chunks, None)  # made while the thread inserts the one before
                assert pending is not None
                last = await pending
                await in_sqlite_thread(conn, and_commit, _nothing)
            except BaseException as exc:
                if pending is not None:  # the rollback waits for the hop in flight
                    await _settled(pending)
                    if not isinstance(exc, asyncio.CancelledError):  # else the release's
                        with contextlib.suppress(Exception):  # not the error to report either
                            await in_sqlite_thread(conn, roll_back)
                raise
        return created, last

    async def _pg_insert_in_chunks(
        self, chunks: Iterator[Sequence[NewJob]]
    ) -> tuple[list[Job], int]:
        """insert_new_jobs_in_chunks on PostgreSQL: (the jobs, the last revision). A
        statement per chunk, their events last."""
        created: list[Job] = []
        last = 0
        enqueue = ChunkedEnqueue()
        async with self._raw_write() as conn:
            token = notify_token(conn.sync_engine)
            async with driver_transaction(conn) as db:
                pending: asyncio.Future[list[int]] | None = None
                try:
                    for chunk in chunks:
                        if not events_of_new_jobs([job.id for job in chunk]):
                            raise ValueError("a job id holds a control character")
                        jobs_in = [job_from_new(job) for job in chunk]
                        sql, args = enqueue.statement(chunk, jobs_in)
                        if pending is not None:
                            enqueue.inserted(await pending)
                        pending = asyncio.ensure_future(db.fetchval(sql, *args))
                        await asyncio.sleep(0)  # its task sends it before next() takes the loop
                        created.extend(jobs_in)
                    if pending is not None:
                        enqueue.inserted(await pending)
                    if created:
                        now = created[0].create_time
                        last = await enqueue.append_events(db, token, EventType.ENQUEUED.value, now)
                except BaseException:
                    if pending is not None:  # the rollback waits for the statement in flight
                        await _settled(pending)
                    raise
        for job, seq in zip(created, enqueue.seqs, strict=True):
            job.seq = seq
        return created, last

    async def _expire_keys(self, conn: AsyncConnection, holders: dict[str, Job], now: int) -> None:
        """Frees keys whose holder is older than the idempotency window: a repeat after the
        window creates a new job."""
        if self.idempotency_window is None:
            return
        stale = [k for k, job in holders.items() if job.create_time < now - self.idempotency_window]
        if stale:
            await conn.execute(
                update(jobs).where(jobs.c.idempotency_key.in_(stale)).values(idempotency_key=None)
            )
            for key in stale:
                del holders[key]

    async def _jobs_by_key(self, conn: AsyncConnection, keys: Iterable[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for chunk in paging.chunks(list(keys), self.dialect.max_in_list):
            stmt = select(jobs).where(jobs.c.idempotency_key.in_(chunk))
            for row in (await conn.execute(stmt)).mappings():
                job = job_from_row(row)
                assert job.idempotency_key is not None
                found[job.idempotency_key] = job
        return found

    async def get_job(self, job_id: str) -> Job | None:
        async with self._raw_read() as conn:  # one statement: one hop, or one round trip
            if self.dialect.single_writer:
                values = await in_sqlite_thread(conn, _fetch_one, _JOB_BY_ID, (job_id,))
            else:
                async with driver_statement(conn) as db:
                    values = await db.fetchrow(_PG_JOB_BY_ID, job_id)
        return None if values is None else job_from_values(values)

    async def list_jobs(
        self,
        flt: JobFilter,
        *,
        limit: int,
        after_seq: int | None = None,
        descending: bool = True,
        seq_window: tuple[int, int] | None = None,
    ) -> list[Job]:
        """One page of matching jobs ordered by seq, starting after the cursor `after_seq`.

        Keyset pagination: pages stay consistent while jobs are inserted (a new job sorts
        after every existing one), unlike OFFSET. `seq_window` (lowest, highest), inclusive,
        bounds the rows looked at: a filter no index serves then scans at most that many.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit == 0:
            return []
        async with self._read() as conn:
            narrow = bool(flt.id_prefix) and await self._few_with_prefix(conn, flt.id_prefix)
            conds = job_conditions(self.dialect, flt, narrow_ids=narrow)
            if after_seq is not None:
                conds.append(jobs.c.seq < after_seq if descending else jobs.c.seq > after_seq)
            if seq_window is not None:
                conds.append(jobs.c.seq.between(*seq_window))
            order = jobs.c.seq.desc() if descending else jobs.c.seq.asc()
            stmt = select(jobs).where(*conds).order_by(order).limit(limit)
            rows = (await conn.execute(stmt)).mappings().all()
        return [job_from_row(r) for r in rows]

    async def _few_with_prefix(self, conn: AsyncConnection, prefix: str, few: int = 2000) -> bool:
        """Whether fewer than `few` ids start with `prefix` (SQLite, by the id index): then
        reading them by id and sorting beats scanning newest first for matches."""
        if not self.dialect.id_prefix_range:
            return False
        probe = select(jobs.c.id).where(*id_range(prefix)).limit(few).subquery()
        found = (await conn.execute(select(func.count()).select_from(probe))).scalar_one()
        return int(found) < few

    async def newest_seq(self) -> int:
        """The seq of the newest job (0 when there is none)."""
        async with self._read() as conn:
            found = (await conn.execute(select(func.max(jobs.c.seq)))).scalar()
        return int(found or 0)

    async def list_jobs_page(
        self,
        flt: JobFilter,
        *,
        limit: int,
        max_bytes: int,
        after_seq: int | None = None,
        descending: bool = True,
    ) -> tuple[Iterator[Job], bool]:
        """Like list_jobs, but also bounded by the stored size of the jobs (see paging.py):
        up to `limit` jobs while their documents add up to at most `max_bytes` (at least one
        job). Returns the jobs, decoded one at a time as they are iterated, and True when more
        jobs match after them."""
        if limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        conds = job_conditions(self.dialect, flt)
        if after_seq is not None:
            conds.append(jobs.c.seq < after_seq if descending else jobs.c.seq > after_seq)
        async with self._read() as conn:
            rows, more = await paging.bounded_rows(
                conn,
                jobs,
                dialect=self.dialect,
                key=jobs.c.seq,
                documents=[jobs.c[name] for name in _DOCUMENTS],
                where=conds,
                order_by=[jobs.c.seq.desc() if descending else jobs.c.seq.asc()],
                after=lambda last: jobs.c.seq < last[0] if descending else jobs.c.seq > last[0],
                limit=limit,
                max_bytes=max_bytes,
                max_in_list=self.dialect.max_in_list,
            )
        return (job_from_row(r) for r in rows), more

    # -- claims, transitions and attempts are added here by the engine -------------------------


# the columns of a job row that can be large
_DOCUMENTS = (
    "payload",
    "result",
    "progress",
    "last_error",
    "labels",
    "http",
    "schedule",
    "cancel_reason",
)


_INSERT_NEW_JOBS = (
    f"INSERT INTO {jobs.name} ({','.join(NEW_JOB_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(NEW_JOB_COLUMNS))})"
)
_JOB_BY_ID = f"SELECT {', '.join(JOB_COLUMNS)} FROM {jobs.name} WHERE id = ?"
_PG_JOB_BY_ID = _JOB_BY_ID.replace("?", "$1::varchar")


def _fetch_one(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    """The first row `sql` returns, or None. In the driver's thread."""
    return db.execute(sql, params).fetchone()


_INSERT_NEW_JOBS_JSON = sqlite_insert_shared(jobs.name, NEW_JOB_COLUMNS, NEW_JOB_COLUMNS)


def _json_enqueue(
    new_jobs: Sequence[NewJob], created: list[Job]
) -> tuple[str, tuple[Any, ...], list[tuple[int, str]]] | None:
    """The statement, its parameters and the snapshot tails of sqlite_enqueue_json for
    `new_jobs` (as `created`), or None when their texts cannot go that way (see json_rows,
    events_of_new_jobs)."""
    shared = shared_job_values(new_jobs)
    params: tuple[Any, ...] = ()
    if shared is None:
        sql = _INSERT_NEW_JOBS_JSON
        rows = json_rows([new_job_values(job) for job in new_jobs])
    else:  # the usual batch: only ids, payloads and times differ (times mostly not either:
        # each value a row carries costs SQLite a parse of the row's array)
        own, values = own_batch_values(new_jobs)
        sql = sqlite_insert_shared(jobs.name, NEW_JOB_COLUMNS, own)
        params = shared_params(NEW_JOB_COLUMNS, own, shared)
        rows = json_rows(values)
    if rows is None or not events_of_new_jobs([job.id for job in new_jobs]):
        return None
    return sql, (rows, *params), new_job_snapshot_tails(created, alike=shared is not None)


def _sqlite_enqueue_work(
    new_jobs: Sequence[NewJob], created: list[Job], now: int
) -> Callable[[sqlite3.Connection], int]:
    """The work that inserts `new_jobs` (`created`: job_from_new of each, whose seqs it sets)
    and appends their ENQUEUED events on SQLite's own connection, in the transaction open
    there, and returns the last revision. Built on the event loop, run in the driver's
    thread (in_sqlite_thread)."""
    batched = _json_enqueue(new_jobs, created)
    if batched is None:  # a text holds U+0000 or an id a control character: row by row
        values = [new_job_values(job) for job in new_jobs]
        return functools.partial(
            _sqlite_enqueue, sql=_INSERT_NEW_JOBS, rows=values, created=created, now=now
        )
    sql, params, tails = batched

    def work(db: sqlite3.Connection) -> int:
        first, last = sqlite_enqueue_json(db, sql, params, tails, EventType.ENQUEUED.value, now)
        for n, job in enumerate(created):
            job.seq = first + n
        return last

    return work


async def _settled(pending: asyncio.Future[Any]) -> None:
    """Waits for `pending` to end, its outcome retrieved: when another error is being
    reported, a chunk's insert in flight must end before the rollback."""
    await asyncio.wait([pending])
    if not pending.cancelled():
        pending.exception()


def _nothing(db: sqlite3.Connection) -> None:
    """and_commit's work when all is done: the COMMIT alone."""


def _sqlite_enqueue(
    db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]], created: list[Job], now: int
) -> int:
    """In a write transaction on SQLite's own connection (in the driver's thread): insert the
    rows with `sql` (rows start with the id), set each job's seq, append their ENQUEUED
    events; returns the last revision."""
    seqs = sqlite_insert_jobs(db, sql, rows)
    for job, seq in zip(created, seqs, strict=True):
        job.seq = seq
    snapshots = new_job_snapshots(created)
    kind = EventType.ENQUEUED.value
    return sqlite_append_events(
        db, [(job.id, kind, now, text) for job, text in zip(created, snapshots, strict=True)]
    )


def _enqueued(jobs_in: list[Job], last: int, now: int) -> list[Event]:
    """The ENQUEUED events of jobs just created, whose last revision is `last`."""
    first = last - len(jobs_in) + 1
    return [Event(first + n, EventType.ENQUEUED, job, now) for n, job in enumerate(jobs_in)]
