"""JobFilter -> SQL conditions, shared by listing, watching, stats and the bulk operations."""

from __future__ import annotations

from typing import Any

from jobwheel.server.model import JobFilter, TimeRange
from jobwheel.server.storage.dialect import Dialect
from jobwheel.server.storage.schema import jobs
from sqlalchemy import ColumnElement


def _time_range(column: ColumnElement[Any], rng: TimeRange | None) -> list[ColumnElement[bool]]:
    """[start, end); a range without bounds still asks for a value (e.g. "has ended")."""
    if rng is None:
        return []
    if rng.start is None and rng.end is None:
        return [column.isnot(None)]
    conds: list[ColumnElement[bool]] = []
    if rng.start is not None:
        conds.append(column >= rng.start)
    if rng.end is not None:
        conds.append(column < rng.end)
    return conds


SELECTIVE_ID_PREFIX = 13  # "0190a1b2-c3d4": a UUIDv7's millisecond time stamp


def job_conditions(dialect: Dialect, flt: JobFilter) -> list[ColumnElement[bool]]:
    """Conditions that must all hold; an empty list matches every job."""
    conds: list[ColumnElement[bool]] = []
    if flt.ids:
        conds.append(jobs.c.id.in_(flt.ids))
    if flt.id_prefix:
        if dialect.name == "sqlite" and len(flt.id_prefix) >= SELECTIVE_ID_PREFIX:
            # SQLite compares text by code point: the range lets the unique index on id
            # narrow the scan (PostgreSQL's collations need not order prefixes like that).
            # Only for a prefix as long as a UUIDv7's millisecond: a shorter one can match
            # most jobs, which the newest-first scan finds faster than sorting every match.
            conds.append(jobs.c.id >= flt.id_prefix)
            conds.append(jobs.c.id < flt.id_prefix + "\U0010ffff")
        conds.append(jobs.c.id.startswith(flt.id_prefix, autoescape=True))
    if flt.states:
        conds.append(jobs.c.state.in_([s.value for s in flt.states]))
    if flt.queues:
        conds.append(jobs.c.queue.in_(flt.queues))
    if flt.tasks:
        conds.append(jobs.c.task.in_(flt.tasks))
    for key, value in flt.labels:
        conds.append(dialect.json_field_equals(jobs.c.labels, key, value))
    for key, value in flt.payload:
        conds.append(dialect.json_field_equals(jobs.c.payload, key, value))
    conds += _time_range(jobs.c.create_time, flt.create_time)
    conds += _time_range(jobs.c.next_run_time, flt.next_run_time)
    conds += _time_range(jobs.c.end_time, flt.end_time)
    if flt.recurring is not None:
        conds.append(jobs.c.recurring.is_(flt.recurring))
    return conds
