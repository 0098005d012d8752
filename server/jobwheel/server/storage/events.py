"""The event log: appended in the transaction of each change, read by WatchJobs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from jobwheel.server.model import Event, EventType, Job, JobFilter, Micros
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.convert import (
    JOB_COLUMNS,
    job_from_row,
    job_from_snapshot,
    job_from_values,
    job_snapshot,
)
from jobwheel.server.storage.dialect import (
    NOTIFY_CHANNEL,
    NOTIFY_CHANNEL_SQL,
    SETTINGS_CHANGED,
    dialect_of,
    loads,
    notify_token,
)
from jobwheel.server.storage.driver import driver_connection
from jobwheel.server.storage.filters import job_conditions
from jobwheel.server.storage.schema import event_head, event_subscriptions, events, jobs
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

Change = tuple[EventType, Job]
# a change with its job's snapshot, written by the statement that made it (snapshot_sql)
TextChange = tuple[EventType, Job, str]
_PRIORITY, _SEQ = JOB_COLUMNS.index("priority"), JOB_COLUMNS.index("seq")
# the newest revision (row 1 of event_head)
_HEAD = select(event_head.c.revision).where(event_head.c.id == 1)


async def append_events(
    conn: AsyncConnection,
    changes: Sequence[Change],
    now: Micros,
    snapshots: Sequence[str] | None = None,
) -> list[Event]:
    """Appends events for `changes` (the job as it is after each) and returns them.
    `snapshots`: each job's job_snapshot, when the caller has them already.

    Call it last in a write transaction: the head row stays locked until commit, which keeps
    revisions gap-free and in commit order across writers (PostgreSQL replicas included).
    """
    if not changes:
        return []
    texts = snapshots if snapshots is not None else [job_snapshot(job) for _, job in changes]
    last = await dialect_of(conn).append_event_rows(
        conn,
        [
            (job.id, etype.value, now, text)
            for (etype, job), text in zip(changes, texts, strict=True)
        ],
    )
    first = last - len(changes) + 1
    return [
        Event(revision=first + i, type=etype, job=job, time=now)
        for i, (etype, job) in enumerate(changes)
    ]


async def append_text_changes(
    conn: AsyncConnection, changes: Sequence[TextChange], now: Micros
) -> list[Event]:
    """append_events for changes that carry their snapshots."""
    if not changes:
        return []
    last = await dialect_of(conn).append_event_rows(conn, event_rows(changes, now))
    return events_of(changes, last, now)


def event_rows(changes: Sequence[TextChange], now: Micros) -> list[tuple[Any, ...]]:
    """The event log's rows of `changes` (Dialect.append_event_rows' shape)."""
    return [(job.id, etype.value, now, text) for etype, job, text in changes]


def text_changes(
    kind: EventType, rows: Sequence[Sequence[Any]]
) -> tuple[list[Job], list[TextChange]]:
    """Rows a statement returned (JOB_COLUMNS, then the job's snapshot): the jobs, and a `kind`
    change of each, in the rows' order."""
    made = [job_from_values(row) for row in rows]  # the snapshot after the columns
    return made, [(kind, job, row[-1]) for job, row in zip(made, rows, strict=True)]


def by_seq(rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
    """Rows of JOB_COLUMNS in seq order: a promotion's events in a stable order."""
    return sorted(rows, key=lambda row: row[_SEQ])


def claim_order(rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
    """Rows of JOB_COLUMNS best priority first, FIFO within one: the order a claim starts
    its jobs in."""
    return sorted(rows, key=lambda row: (-row[_PRIORITY], row[_SEQ]))


def events_of(changes: Sequence[TextChange], last: int, now: Micros) -> list[Event]:
    """The events of `changes`, appended under the revisions up to `last`."""
    first = last - len(changes) + 1
    return [
        Event(revision=first + i, type=etype, job=job, time=now)
        for i, (etype, job, _) in enumerate(changes)
    ]


class EventLog(StoreBase):
    """Mixed into Store."""

    @asynccontextmanager
    async def listening(
        self,
        on_notify: Callable[[], None],
        *,
        others_only: bool = False,
        on_settings: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> AsyncIterator[bool]:
        """While inside, `on_notify` is called when any process appends events (PostgreSQL
        LISTEN/NOTIFY, on a connection held for the purpose), or with `others_only` any
        process but this store's own; `on_settings` when a process changed queue settings or
        event subscriptions; `on_lost` if that connection closes (nothing is told after it).
        Yields False elsewhere."""
        if not self.dialect.notify:
            yield False
            return
        own = " " + notify_token(self.write_engine.sync_engine)
        async with self._outages(), self.read_engine.connect() as conn:
            driver = await driver_connection(conn)

            def callback(_conn: object, _pid: object, _channel: object, payload: object) -> None:
                if payload == SETTINGS_CHANGED:
                    if on_settings is not None:
                        on_settings()
                elif not (others_only and isinstance(payload, str) and payload.endswith(own)):
                    on_notify()

            gone: list[bool] = []

            def closed(_conn: object) -> None:
                gone.append(True)
                if on_lost is not None:
                    on_lost()

            # the schema's channel, and the one name earlier versions use in every schema, so
            # that their replicas are heard while a rolling upgrade runs
            ours = str(await driver.fetchval(f"SELECT {NOTIFY_CHANNEL_SQL}"))
            channels = (NOTIFY_CHANNEL, ours) if ours != NOTIFY_CHANNEL else (ours,)
            for channel in channels:
                await driver.add_listener(channel, callback)
            driver.add_termination_listener(closed)
            try:
                yield True
            finally:
                driver.remove_termination_listener(closed)
                if gone:  # not back to the pool, where the next read would find it closed
                    await conn.invalidate()
                else:
                    with contextlib.suppress(Exception):  # the connection may be going
                        for channel in channels:
                            await driver.remove_listener(channel, callback)

    async def head_revision(self) -> int:
        async with self._read() as conn:
            return int((await conn.execute(_HEAD)).scalar_one())

    async def oldest_revision(self) -> int | None:
        async with self._read() as conn:
            oldest = (await conn.execute(select(func.min(events.c.revision)))).scalar()
        return None if oldest is None else int(oldest)

    async def read_events(self, after: int, limit: int) -> list[Event]:
        """Events with revision > `after`, in order, with each job's payload joined in."""
        return (await self.read_events_kept(after, limit, None))[0]

    async def read_events_kept(
        self, after: int, limit: int, keep: Callable[[EventType, str, bool], bool] | None
    ) -> tuple[list[Event], list[int]]:
        """`read_events`, decoding only the events `keep` (type, job id, whether the job is
        recurring) wants; the revisions of the others come second. `keep` is asked after the
        last await, so the caller can act on the answers before anything else runs."""
        stmt = (
            select(events, jobs.c.payload, jobs.c.recurring)
            .select_from(events.outerjoin(jobs, jobs.c.id == events.c.job_id))
            .where(events.c.revision > after)
            .order_by(events.c.revision)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            gone = {r["job_id"] for r in rows if r["payload"] is None}
            payloads = await _deleted_payloads(conn, gone) if gone else {}
        kept: list[Event] = []
        skipped: list[int] = []
        for r in rows:
            # a deleted job (no row): its events are kept, whoever asks
            recurring = r["recurring"]
            if (
                keep is None
                or recurring is None
                or keep(EventType(r["type"]), r["job_id"], recurring)
            ):
                kept.append(_event_from_row(r, payloads))
            else:
                skipped.append(r["revision"])
        return kept, skipped

    @asynccontextmanager
    async def snapshot(
        self, flt: JobFilter, chunk: int = 500
    ) -> AsyncIterator[tuple[int, AsyncIterator[list[Job]]]]:
        """The revision R and the matching jobs as they are at R, from one consistent view
        (a SQLite read transaction; REPEATABLE READ on PostgreSQL), in chunks."""
        async with self._outages(), self._read_connection() as conn:
            conn = await self.dialect.consistent_reads(conn)
            async with conn.begin():
                head = (await conn.execute(_HEAD)).scalar_one()
                stmt = select(jobs).where(*job_conditions(self.dialect, flt)).order_by(jobs.c.seq)
                result = await conn.stream(stmt.execution_options(yield_per=chunk))

                async def chunks() -> AsyncIterator[list[Job]]:
                    async for part in result.mappings().partitions(chunk):
                        yield [job_from_row(r) for r in part]

                yield int(head), chunks()

    async def prune_events(
        self, before: Micros, keep_at_least: int = 1, limit: int = 10_000
    ) -> int:
        """Deletes the oldest events, up to `limit` of them, up to the first one not older
        than `before`, always keeping the newest `keep_at_least`; returns how many. Only ever
        a head of the log: times need not follow revisions (replicas' clocks differ, a
        writer stamps its time before it takes its revisions), and a hole in the middle would
        be skipped by a replay that resumes before it. Nor one not yet handed to event
        subscriptions (event_head's row 2) while there are any: a backlog of deliveries is not
        lost to it."""
        async with self._write() as conn:
            newest = (await conn.execute(select(func.max(events.c.revision)))).scalar() or 0
            last = newest - keep_at_least
            if (await conn.execute(select(event_subscriptions.c.id).limit(1))).first():
                handed = select(event_head.c.revision).where(event_head.c.id == 2)
                last = min(last, (await conn.execute(handed)).scalar() or 0)
            oldest = select(events.c.revision, events.c.time).order_by(events.c.revision)
            upto = None
            for revision, time in await conn.execute(oldest.limit(limit)):
                if time >= before or revision > last:
                    break
                upto = revision
            if upto is None:
                return 0
            return (await conn.execute(delete(events).where(events.c.revision <= upto))).rowcount


def _event_from_row(row: Any, deleted: dict[str, dict[str, Any]]) -> Event:
    """The event of a row of the log joined to its job's row; `deleted`: the payloads of
    jobs whose row is gone, from their DELETED events."""
    text = row["payload"]
    payload = loads(text) if text is not None else deleted.get(row["job_id"])
    return Event(
        revision=row["revision"],
        type=EventType(row["type"]),
        job=job_from_snapshot(row["job"], payload),
        time=row["time"],
    )


async def _deleted_payloads(conn: AsyncConnection, job_ids: set[str]) -> dict[str, Any]:
    """The payloads the DELETED events of `job_ids` keep (jobs deleted since, whose rows are
    gone; a job pruned by retention has none), by job id."""
    stmt = select(events.c.job_id, events.c.job).where(
        events.c.job_id.in_(sorted(job_ids)), events.c.type == EventType.DELETED.value
    )
    out: dict[str, Any] = {}
    for job_id, text in await conn.execute(stmt):
        payload = loads(text).get("payload")
        if payload is not None:
            out[job_id] = payload
    return out
