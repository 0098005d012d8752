"""Proto -> model conversion with validation.

Every check records a field violation instead of stopping at the first, so one
INVALID_ARGUMENT names every offending field (with its path, e.g. "jobs[3].schedule.cron").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from google.protobuf import struct_pb2
from jobwheel.server import model
from jobwheel.server.api import reply_size
from jobwheel.server.api.convert import (
    DST_FOLD_TO_PROTO,
    DST_GAP_TO_PROTO,
    JOB_STATE_FROM_PROTO,
    MISFIRE_TO_PROTO,
    OVERLAP_TO_PROTO,
)
from jobwheel.server.api.errors import quote
from jobwheel.server.api.fields import (
    Violations,
    check_text,
    json_data,
    micros_of_duration,
    micros_of_timestamp,
    plain_json,
)
from jobwheel.server.api.http_target import check_http_url, http_from_proto
from jobwheel.server.rules import schedules, states, triggers
from jobwheel.v1 import job_pb2, job_service_pb2

__all__ = ["Violations", "check_http_url", "micros_of_duration", "micros_of_timestamp"]

T = TypeVar("T")
NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9_.:/\-]{1,63}$")
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_IDEMPOTENCY_KEY = 255  # the column holds 255 characters on PostgreSQL
MAX_ATTEMPTS = 1000
MIN_INTERVAL = model.SECOND
# The longest wait a field may ask for: timeouts, backoffs, jitter, catch-up windows.
MAX_WAIT = 366 * 86_400 * model.SECOND
MAX_ID = 64
MAX_TIME_ZONE = 64
MAX_CRON = 256
MAX_FILTER_VALUES = 1000
MAX_FILTER_PAYLOAD = 64 << 10
# A start time this far in the past is taken as "now" (client clocks drift); beyond it the
# request is more likely a bug than an intent.
PAST_TOLERANCE = 60 * model.SECOND


def check_name(value: str, field: str, errors: Violations) -> None:
    if not NAME_RE.match(value):
        errors.add(
            field,
            "must be 1-128 characters of letters, digits, '_', '-', '.', ':'"
            if value
            else "is required",
        )


def _enum(value: int, table: Mapping[Any, T], default: T, field: str, errors: Violations) -> T:
    if value == 0:
        return default
    if value not in table:
        errors.add(field, f"unknown value {value}")
        return default
    return table[value]


_OVERLAP = {v: k for k, v in OVERLAP_TO_PROTO.items()}
_MISFIRE = {v: k for k, v in MISFIRE_TO_PROTO.items()}
_DST_GAP = {v: k for k, v in DST_GAP_TO_PROTO.items()}
_DST_FOLD = {v: k for k, v in DST_FOLD_TO_PROTO.items()}
# an unset (0) policy takes the model's default
_SCHEDULE = model.Schedule()


def schedule_from_proto(
    s: job_pb2.Schedule, prefix: str, now: model.Micros, errors: Violations
) -> model.Schedule:
    """Validates a Schedule; a relative delay becomes an absolute start time."""
    start: model.Micros | None = None
    latest = triggers.LATEST_FIRE
    if s.HasField("start_time") and s.HasField("delay"):
        errors.add(f"{prefix}.delay", "set start_time or delay, not both")
    if s.HasField("start_time"):
        start = micros_of_timestamp(s.start_time, f"{prefix}.start_time", errors)
        if start is not None and start < now - PAST_TOLERANCE:
            errors.add(f"{prefix}.start_time", "is in the past")
        elif start is not None and start > latest:
            errors.add(f"{prefix}.start_time", f"must be before {triggers.LATEST_FIRE_TEXT}")
    elif s.HasField("delay"):
        delay = micros_of_duration(s.delay, f"{prefix}.delay", errors)
        if delay is not None and now + delay > latest:
            errors.add(f"{prefix}.delay", f"puts the start after {triggers.LATEST_FIRE_TEXT}")
        elif delay is not None:
            start = now + delay
    reported = set()  # fields whose text failed; the schedule's own check would repeat them
    if s.time_zone and not check_text(
        s.time_zone, f"{prefix}.time_zone", errors, max_chars=MAX_TIME_ZONE, identifier=True
    ):
        reported.add("time_zone")
    if s.cron and not check_text(
        s.cron, f"{prefix}.cron", errors, max_chars=MAX_CRON, identifier=True
    ):
        reported.add("cron")
    interval: model.Micros | None = None
    if s.HasField("interval"):
        interval = micros_of_duration(s.interval, f"{prefix}.interval", errors, low=MIN_INTERVAL)
        if interval is None:
            interval = MIN_INTERVAL  # reported; the schedule is still a recurring one
    end: model.Micros | None = None
    if s.HasField("end_time"):
        end = micros_of_timestamp(s.end_time, f"{prefix}.end_time", errors)
    jitter = _SCHEDULE.jitter
    if s.HasField("jitter"):
        jitter = micros_of_duration(s.jitter, f"{prefix}.jitter", errors, high=MAX_WAIT) or 0
    catchup = _SCHEDULE.catchup_window
    if s.HasField("catchup_window"):
        field = f"{prefix}.catchup_window"
        catchup = micros_of_duration(s.catchup_window, field, errors, high=MAX_WAIT) or 0
    # interval occurrences run start to start from the first one, now + interval
    anchor = now + interval if interval and not s.cron and start is None else None
    schedule = model.Schedule(
        start_time=start,
        cron=s.cron,
        time_zone=s.time_zone,
        interval=interval,
        limit=s.limit,
        end_time=end,
    )
    for problem in schedules.problems(schedule, now):
        if problem.field not in reported:
            errors.add(f"{prefix}.{problem.field}", problem.message)
    return replace(
        schedule,
        jitter=jitter,
        overlap_policy=_enum(
            s.overlap_policy, _OVERLAP, _SCHEDULE.overlap_policy, f"{prefix}.overlap_policy", errors
        ),
        misfire_policy=_enum(
            s.misfire_policy,
            _MISFIRE,
            _SCHEDULE.misfire_policy,
            f"{prefix}.misfire_policy",
            errors,
        ),
        catchup_window=catchup,
        dst_gap_policy=_enum(
            s.dst_gap_policy,
            _DST_GAP,
            _SCHEDULE.dst_gap_policy,
            f"{prefix}.dst_gap_policy",
            errors,
        ),
        dst_fold_policy=_enum(
            s.dst_fold_policy,
            _DST_FOLD,
            _SCHEDULE.dst_fold_policy,
            f"{prefix}.dst_fold_policy",
            errors,
        ),
        anchor=anchor,
    )


def retry_policy_from_proto(
    p: job_pb2.RetryPolicy, prefix: str, errors: Violations
) -> model.RetryPolicy:
    d = model.RetryPolicy()
    max_attempts = p.max_attempts or d.max_attempts
    if not 0 < max_attempts <= MAX_ATTEMPTS:
        errors.add(f"{prefix}.max_attempts", f"must be between 1 and {MAX_ATTEMPTS}")
    initial = d.initial_backoff
    if p.HasField("initial_backoff"):
        field = f"{prefix}.initial_backoff"
        initial = micros_of_duration(p.initial_backoff, field, errors, high=MAX_WAIT) or 0
    cap = d.max_backoff
    if p.HasField("max_backoff"):
        field = f"{prefix}.max_backoff"
        cap = micros_of_duration(p.max_backoff, field, errors, high=MAX_WAIT) or 0
    if initial > cap:
        errors.add(f"{prefix}.max_backoff", "must not be less than initial_backoff")
    multiplier = p.multiplier or d.multiplier
    if not 1.0 <= multiplier <= 100.0:
        errors.add(f"{prefix}.multiplier", "must be between 1 and 100")
    jitter = p.jitter if p.HasField("jitter") else d.jitter
    if not 0.0 <= jitter <= 1.0:
        errors.add(f"{prefix}.jitter", "must be between 0 and 1")
    return model.RetryPolicy(max_attempts, initial, cap, multiplier, jitter)


# An unset policy is all defaults (RetryPolicy is frozen: one instance serves every job).
_DEFAULT_RETRY = model.RetryPolicy()


def _key(name: str) -> str:
    """A map key as it appears in a field path: itself, or quoted and cut if unwieldy."""
    return name if len(name) <= 40 and name.isprintable() else quote(name, 20)


def check_labels(labels: Mapping[str, str], field: str, errors: Violations) -> None:
    """At most MAX_LABELS; keys 1-63 of [A-Za-z0-9_.:/-], values up to 256 characters
    without control characters."""
    if not labels:
        return
    if len(labels) > MAX_LABELS:
        errors.add(field, f"at most {MAX_LABELS} labels")
    for key, val in labels.items():
        if not LABEL_KEY_RE.match(key):
            errors.add(f"{field}[{_key(key)}]", "key must be 1-63 characters of [A-Za-z0-9_.:/-]")
        else:
            check_text(val, f"{field}[{key}]", errors, max_chars=MAX_LABEL_VALUE, identifier=True)


def json_document(
    doc: struct_pb2.Struct | struct_pb2.Value, field: str, max_bytes: int, errors: Violations
) -> tuple[bool, Any]:
    """(True, the document as JSON data) if it is at most `max_bytes` encoded and keeps the
    JSON rules (see fields.json_data); else (False, None) and a violation."""
    ok, data, _ = _json_document(doc, field, max_bytes, errors)
    return ok, data


def _json_document(
    doc: struct_pb2.Struct | struct_pb2.Value, field: str, max_bytes: int, errors: Violations
) -> tuple[bool, Any, bool]:
    """json_document, and whether `doc` itself equals the message the data converts back to
    (then a reply may copy it instead of converting)."""
    if doc.ByteSize() > max_bytes:
        errors.add(field, f"is larger than {max_bytes} bytes")
        return False, None, False
    fast = plain_json(doc, whole_ints=True)
    if fast is not None:
        return True, fast[0], fast[1]
    ok, data = json_data(doc, field, errors)
    return ok, _json_numbers(data) if ok else None, False


def _json_numbers(data: Any) -> Any:
    # Struct stores every number as a double; give handlers 5, not 5.0, when it is whole.
    if isinstance(data, float) and data.is_integer() and abs(data) <= 2**53:
        return int(data)
    if isinstance(data, dict):
        return {k: _json_numbers(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_json_numbers(v) for v in data]
    return data


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int  # Settings.max_payload_bytes holds the default


def new_job_from_proto(
    req: job_service_pb2.EnqueueJobRequest,
    prefix: str,
    now: model.Micros,
    limits: Limits,
    errors: Violations,
    job_id: str,
    reply_payloads: list[struct_pb2.Struct | None] | None = None,
) -> model.NewJob:
    """The validated job of an enqueue request (violations go to `errors`). Given
    `reply_payloads`, appends the request's payload when a reply may copy it as the stored
    payload's message, else None."""
    queue = req.queue or model.DEFAULT_QUEUE
    check_name(queue, f"{prefix}queue", errors)
    http = http_from_proto(req.http, f"{prefix}http", errors) if req.HasField("http") else None
    task = req.task or ("http" if http else "")
    check_name(task, f"{prefix}task", errors)
    payload_ok, payload, same = _json_document(
        req.payload, f"{prefix}payload", limits.max_payload_bytes, errors
    )
    if reply_payloads is not None:
        reply_payloads.append(req.payload if same else None)
    reply_size.check_job_fields(req, req.ByteSize() - req.payload.ByteSize(), prefix, errors)
    check_labels(req.labels, f"{prefix}labels", errors)
    check_text(
        req.idempotency_key,
        f"{prefix}idempotency_key",
        errors,
        max_chars=MAX_IDEMPOTENCY_KEY,
        identifier=True,
    )
    timeout: model.Micros | None = None
    if req.HasField("timeout"):
        timeout = micros_of_duration(req.timeout, f"{prefix}timeout", errors, high=MAX_WAIT)
        if timeout is not None and timeout <= 0:
            errors.add(f"{prefix}timeout", "must be positive")
    schedule = (
        schedule_from_proto(req.schedule, f"{prefix}schedule", now, errors)
        if req.HasField("schedule")
        else None
    )
    retry = (
        retry_policy_from_proto(req.retry_policy, f"{prefix}retry_policy", errors)
        if req.HasField("retry_policy")
        else _DEFAULT_RETRY
    )
    next_run = now
    if schedule is not None and not errors.items:
        next_run = first_run(schedule, now, f"{prefix}schedule", errors)
    state = states.initial_state(next_run, now)
    return model.NewJob(
        id=job_id,
        queue=queue,
        task=task,
        payload=payload if payload_ok else {},
        labels=dict(req.labels),
        priority=req.priority,
        state=state,
        schedule=schedule,
        retry_policy=retry,
        timeout=timeout,
        idempotency_key=req.idempotency_key or None,
        http=http,
        create_time=now,
        next_run_time=next_run,
    )


def first_run(
    schedule: model.Schedule, now: model.Micros, field: str, errors: Violations
) -> model.Micros:
    """When a job with this (valid) schedule first runs: now, or later."""
    if schedule.recurring:
        after = schedule.start_time - 1 if schedule.start_time is not None else now
        fires = triggers.next_fires(schedule, max(after, now - 1), 1)
        if not fires:
            errors.add(field, "never fires")
            return now
        return fires[0].time
    if schedule.start_time is not None and schedule.start_time > now:
        return schedule.start_time
    return now


def _time_range(r: job_pb2.TimeRange, field: str, errors: Violations) -> model.TimeRange | None:
    if not (r.HasField("start_time") or r.HasField("end_time")):
        return None
    start = end = None
    if r.HasField("start_time"):
        start = micros_of_timestamp(r.start_time, f"{field}.start_time", errors)
    if r.HasField("end_time"):
        end = micros_of_timestamp(r.end_time, f"{field}.end_time", errors)
    if start is not None and end is not None and start > end:
        errors.add(field, "start_time is after end_time")
    return model.TimeRange(start, end)


def check_id(value: str, field: str, errors: Violations) -> bool:
    """A job or subscription id: required, at most 64 characters, no control characters."""
    return check_text(value, field, errors, max_chars=MAX_ID, identifier=True, required=True)


def filter_from_proto(f: job_pb2.JobFilter, prefix: str, errors: Violations) -> model.JobFilter:
    for name in ("ids", "states", "queues", "tasks"):
        if len(getattr(f, name)) > MAX_FILTER_VALUES:
            errors.add(f"{prefix}.{name}", f"at most {MAX_FILTER_VALUES} values")
    errors.raise_if_any()  # before looking at each of a million values
    states = []
    for i, s in enumerate(f.states):
        if s not in JOB_STATE_FROM_PROTO:
            errors.add(f"{prefix}.states[{i}]", f"not a job state: {s}")
        else:
            states.append(JOB_STATE_FROM_PROTO[s])
    for i, q in enumerate(f.queues):
        check_name(q, f"{prefix}.queues[{i}]", errors)
    for i, t in enumerate(f.tasks):
        check_name(t, f"{prefix}.tasks[{i}]", errors)
    for i, job_id in enumerate(f.ids):
        check_id(job_id, f"{prefix}.ids[{i}]", errors)
    check_labels(f.labels, f"{prefix}.labels", errors)
    payload_ok, payload = json_document(f.payload, f"{prefix}.payload", MAX_FILTER_PAYLOAD, errors)
    if len(f.payload.fields) > MAX_LABELS:  # one SQL condition each
        errors.add(f"{prefix}.payload", f"at most {MAX_LABELS} fields")
        payload_ok = False
    return model.JobFilter(
        ids=tuple(f.ids),
        states=tuple(states),
        queues=tuple(f.queues),
        tasks=tuple(f.tasks),
        labels=tuple(sorted(f.labels.items())),
        payload=tuple(sorted(payload.items())) if payload_ok else (),
        create_time=_time_range(f.create_time, f"{prefix}.create_time", errors),
        next_run_time=_time_range(f.next_run_time, f"{prefix}.next_run_time", errors),
        end_time=_time_range(f.end_time, f"{prefix}.end_time", errors),
        recurring=f.recurring if f.HasField("recurring") else None,
    )
