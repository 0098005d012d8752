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


def id_range(prefix: str) -> list[ColumnElement[bool]]:
    """Ids starting with `prefix` as a range the unique index on id serves. Only for SQLite,
    which compares text by code point (PostgreSQL's collations need not order prefixes so)."""
    return [jobs.c.id >= prefix, jobs.c.id < prefix + "\U0010ffff"]


def job_conditions(
    dialect: Dialect, flt: JobFilter, *, narrow_ids: bool = False
) -> list[ColumnElement[bool]]:
    """Conditions that must all hold; an empty list matches every job. `narrow_ids` adds the
    index range of `id_prefix` (SQLite), worth it when few ids have the prefix."""
    conds: list[ColumnElement[bool]] = []
    if flt.ids:
        conds.append(jobs.c.id.in_(flt.ids))
    if flt.id_prefix:
        if narrow_ids and dialect.id_prefix_range:
            conds += id_range(flt.id_prefix)
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
