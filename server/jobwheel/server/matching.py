"""JobFilter as a Python predicate, for live events (the same rules as the SQL in
storage/filters.py: AND across fields, OR within one; payload and label values match by JSON
type and value)."""

from __future__ import annotations

from typing import Any

from jobwheel.server.model import Job, JobFilter, Micros, TimeRange

_MISSING = object()


def _same_json(a: Any, b: Any) -> bool:
    # JSON types, at every level: true is not 1 and 1 is not "1", but 1 equals 1.0 (documents
    # nest at most json_rules.MAX_JSON_DEPTH deep)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _in_range(value: Micros | None, r: TimeRange | None) -> bool:
    if r is None:
        return True
    if value is None:
        return False
    return (r.start is None or value >= r.start) and (r.end is None or value < r.end)


def matches(flt: JobFilter, job: Job) -> bool:
    if flt.ids and job.id not in flt.ids:
        return False
    if flt.id_prefix and not job.id.startswith(flt.id_prefix):
        return False
    if flt.states and job.state not in flt.states:
        return False
    if flt.queues and job.queue not in flt.queues:
        return False
    if flt.tasks and job.task not in flt.tasks:
        return False
    for key, value in flt.labels:
        if job.labels.get(key) != value:
            return False
    for key, value in flt.payload:
        if not _same_json(job.payload.get(key, _MISSING), value):
            return False
    if flt.recurring is not None and job.recurring != flt.recurring:
        return False
    return (
        _in_range(job.create_time, flt.create_time)
        and _in_range(job.next_run_time, flt.next_run_time)
        and _in_range(job.end_time, flt.end_time)
    )
