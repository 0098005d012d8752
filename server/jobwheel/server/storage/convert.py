"""Rows <-> domain objects: the only place that knows how model fields are laid out in tables.

Enums are stored as their string values; documents as JSON text (see dialect.dumps). Decoding
ignores unknown keys in stored documents so a newer writer's extra fields do not break reads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from jobwheel.server.model import (
    Attempt,
    AttemptOutcome,
    DstFoldPolicy,
    DstGapPolicy,
    HttpTarget,
    Job,
    JobState,
    Micros,
    MisfirePolicy,
    NewJob,
    OverlapPolicy,
    RetryPolicy,
    Schedule,
)
from jobwheel.server.storage.dialect import dumps, dumps_floatless, loads
from jobwheel.server.storage.schema import jobs
from sqlalchemy.engine import RowMapping

T = TypeVar("T")

_SCHEDULE_ENUMS: dict[str, type[Any]] = {
    "overlap_policy": OverlapPolicy,
    "misfire_policy": MisfirePolicy,
    "dst_gap_policy": DstGapPolicy,
    "dst_fold_policy": DstFoldPolicy,
}


# the fields of what is read back from documents (schedules, retry policies, HTTP targets, full
# snapshots of jobs): members that a newer version wrote and this one does not know are left out
_FIELD_NAMES: dict[type, frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls))
    for cls in (Schedule, RetryPolicy, HttpTarget, Job)
}


def _known_fields(cls: type[T], doc: Mapping[str, Any]) -> dict[str, Any]:
    names = _FIELD_NAMES[cls]
    return {k: v for k, v in doc.items() if k in names}


def schedule_to_doc(s: Schedule) -> dict[str, Any]:
    # Enums are StrEnum: json encodes their string value as is.
    return {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}


def schedule_from_doc(doc: Mapping[str, Any]) -> Schedule:
    fields = _known_fields(Schedule, doc)
    for name, enum_cls in _SCHEDULE_ENUMS.items():
        if name in fields:
            fields[name] = enum_cls(fields[name])
    return Schedule(**fields)


def retry_to_doc(p: RetryPolicy) -> dict[str, Any]:
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}


# Most jobs share a handful of policies and schedules: encode each distinct value once.
@functools.lru_cache(maxsize=256)
def _retry_text(p: RetryPolicy) -> str:
    return dumps(retry_to_doc(p))


@functools.lru_cache(maxsize=256)
def schedule_text(s: Schedule) -> str:
    return dumps(schedule_to_doc(s))


def retry_from_doc(doc: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy(**_known_fields(RetryPolicy, doc))


def http_to_doc(h: HttpTarget) -> dict[str, Any]:
    return {"url": h.url, "method": h.method, "headers": dict(h.headers)}


def http_from_doc(doc: Mapping[str, Any]) -> HttpTarget:
    return HttpTarget(**_known_fields(HttpTarget, doc))


def _doc_or_none(value: Any) -> str | None:
    return None if value is None else dumps(value)


def load_or_none(text: str | None) -> Any:
    return None if text is None else loads(text)


# What an enqueue sets; every other column starts at its server default (0, '' or NULL).
NEW_JOB_COLUMNS = (
    "id",
    "queue",
    "task",
    "payload",
    "labels",
    "priority",
    "state",
    "schedule",
    "retry_policy",
    "timeout",
    "idempotency_key",
    "http",
    "create_time",
    "update_time",
    "next_run_time",
    "recurring",
    "traceparent",
)


# the types of a flat document's values that dumps_floatless spells as dumps does
_PLAIN_VALUES = frozenset((str, int, bool, type(None)))


def payload_text(payload: dict[str, Any]) -> str:
    """dumps(`payload`): most payloads are flat and float-free, which a faster encoder takes."""
    if all(type(value) in _PLAIN_VALUES for value in payload.values()):
        return dumps_floatless(payload)
    return dumps(payload)


def new_job_values(job: NewJob) -> tuple[Any, ...]:
    """Values for NEW_JOB_COLUMNS, in that order (a tuple: the bulk insert binds by position)."""
    schedule = job.schedule
    return (
        job.id,
        job.queue,
        job.task,
        payload_text(job.payload),
        dumps_floatless(job.labels) if job.labels else "{}",
        job.priority,
        job.state.value,
        None if schedule is None else schedule_text(schedule),
        _retry_text(job.retry_policy),
        job.timeout,
        job.idempotency_key,
        None if job.http is None else dumps(http_to_doc(job.http)),
        job.create_time,
        job.create_time,
        job.next_run_time,
        schedule is not None and schedule.recurring,
        job.traceparent,
    )


# the NEW_JOB_COLUMNS that differ between the jobs of a typical batch, or between batches
OWN_JOB_COLUMNS = ("id", "payload", "create_time", "update_time", "next_run_time")


def shared_job_values(new_jobs: Sequence[NewJob]) -> tuple[Any, ...] | None:
    """new_job_values of the first job when every job of the batch has the same values in
    all columns but OWN_JOB_COLUMNS; else None."""
    first = new_jobs[0]
    shape = _shape(first)
    for job in new_jobs:
        # compared as tuples: an object is equal to itself without a call of its __eq__
        if _shape(job) != shape:
            return None
    return new_job_values(first)


def _shape(job: NewJob) -> tuple[Any, ...]:
    return (
        job.queue,
        job.task,
        job.labels,
        job.priority,
        job.state,
        job.schedule,
        job.retry_policy,
        job.timeout,
        job.idempotency_key,
        job.http,
        job.traceparent,
    )


def own_job_values(job: NewJob) -> tuple[Any, ...]:
    """Values for OWN_JOB_COLUMNS."""
    return job.id, payload_text(job.payload), job.create_time, job.create_time, job.next_run_time


# the OWN_JOB_COLUMNS that differ between the jobs of a batch whose times are all the same
OWN_UNTIMED_COLUMNS = ("id", "payload")


def own_batch_values(new_jobs: Sequence[NewJob]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """The columns (of OWN_JOB_COLUMNS) whose values differ between `new_jobs`, and each job's
    values for them: the times only when they differ (else they are shared_job_values')."""
    first = new_jobs[0]
    created, due = first.create_time, first.next_run_time
    if all(job.create_time == created and job.next_run_time == due for job in new_jobs):
        return OWN_UNTIMED_COLUMNS, [(job.id, payload_text(job.payload)) for job in new_jobs]
    return OWN_JOB_COLUMNS, [own_job_values(job) for job in new_jobs]


def job_from_new(job: NewJob, seq: int = 0) -> Job:
    """The Job a fresh insert of `job` reads back as, without reading it back.

    Top-level documents are copied, not re-decoded (decoding costs more than the insert);
    validated payloads are JSON-native, so they equal what a later read decodes.
    """
    http = job.http
    # positional: Job's fields in order, through next_run_time (keywords cost twice as much)
    created = Job(
        job.id,
        job.queue,
        job.task,
        dict(job.payload),
        dict(job.labels),
        job.priority,
        job.state,
        job.schedule,
        job.retry_policy,
        job.timeout,
        job.idempotency_key,
        None if http is None else HttpTarget(http.url, http.method, dict(http.headers)),
        job.create_time,
        job.create_time,
        job.next_run_time,
    )
    created.traceparent = job.traceparent
    created.seq = seq
    return created


# Policies and schedules are immutable and shared by many jobs: each stored text is decoded
# once (a claim reads hundreds of rows per transaction).
@functools.lru_cache(maxsize=256)
def _retry_from_text(text: str) -> RetryPolicy:
    return retry_from_doc(json.loads(text))


@functools.lru_cache(maxsize=256)
def _schedule_from_text(text: str) -> Schedule:
    # schedule_text wrote it of int64s and strings, which orjson reads exactly (and 5x faster:
    # one-off jobs each have a schedule of their own, which this cache does not hold for long)
    return schedule_from_doc(orjson.loads(text))


_STATES = {state.value: state for state in JobState}


# the jobs table's columns a Job is read from (all but the derived `recurring`), in the
# table's order: job_from_values unpacks them so
JOB_COLUMNS = tuple(c.name for c in jobs.c if c.name != "recurring")
_WIDTH = len(JOB_COLUMNS)
_values_of = operator.itemgetter(*JOB_COLUMNS)


def job_from_row(row: Mapping[Any, Any]) -> Job:
    """The job a jobs-table row holds, from a mapping of its column names."""
    return job_from_values(_values_of(row))


def job_from_values(row: Sequence[Any]) -> Job:
    """The job a jobs-table row holds, from its JOB_COLUMNS values in that order (values
    after those are ignored). A claim reads a row per job: no mapping is built for it."""
    (
        seq, id_, queue, task, payload, labels, priority, state, schedule, retry_policy,
        timeout, idempotency_key, http, create_time, update_time, next_run_time, attempt,
        execution_count, released_attempts, start_time, end_time, last_error, result,
        cancel_reason, skipped_count, progress, worker_id, lease_expire_time, traceparent,
        epoch,
    ) = row[:_WIDTH]  # fmt: skip
    # positional: Job's fields in order (29 keywords cost three times as much;
    # test_job_rows.py holds it to the row field by field)
    return Job(
        id_,
        queue,
        task,
        loads(payload),
        {} if labels == "{}" else loads(labels),  # most jobs have none
        priority,
        _STATES[state],
        None if schedule is None else _schedule_from_text(schedule),
        _retry_from_text(retry_policy),
        timeout,
        idempotency_key,
        None if http is None else http_from_doc(loads(http)),
        create_time,
        update_time,
        next_run_time,
        attempt,
        execution_count,
        released_attempts,
        start_time,
        end_time,
        last_error,
        load_or_none(result),
        cancel_reason,
        skipped_count,
        load_or_none(progress),
        worker_id,
        lease_expire_time,
        traceparent,
        seq,
        epoch,
    )


def moved_on_values(after: Job, now: Micros) -> tuple[Any, ...]:
    """The misfire catch-up's UPDATE of a job it moved on, in the order both backends'
    statements take: next_run_time, skipped_count, state, end_time, update_time, then the
    seq that names the row."""
    state = after.state.value
    return (after.next_run_time, after.skipped_count, state, after.end_time, now, after.seq)


def job_result_doc(value: Any) -> str | None:
    """Encoding for the nullable documents (result, progress) the engine will write."""
    return _doc_or_none(value)


# Snapshot fields every snapshot holds (Job's fields without a default); the others only when
# they differ from their default: a reader (this one or an older one) fills in the defaults.
_REQUIRED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Job)
    # the trace context is read from the jobs table by those that continue the trace
    if f.name not in ("payload", "schedule", "retry_policy", "http", "traceparent")
    and f.default is dataclasses.MISSING
    and f.default_factory is dataclasses.MISSING
)
_OPTIONAL_FIELDS = tuple(
    (f.name, f.default)
    for f in dataclasses.fields(Job)
    if f.name != "traceparent"
    and f.name not in _REQUIRED_FIELDS
    and f.name != "payload"
    and f.name not in ("schedule", "retry_policy", "http")
)


def job_snapshot(job: Job) -> str:
    """The job without its payload, as stored in the event log: compact (fields at their
    default are left out), decoded by job_from_snapshot.

    The text `dumps` makes of that document (two per attempt: written member by member, a
    fifth of the server's CPU in a PostgreSQL drain). orjson writes it, with the documents
    that may hold floats (which it may spell otherwise) as `dumps` text; the other fields
    hold what Job's types say (labels strings, times ints), which it spells as `dumps` does.
    What orjson refuses (an int past 64 bits, a lone surrogate) is written member by member."""
    return _snapshot_text(job)


def deleted_job_snapshot(job: Job) -> str:
    """job_snapshot with the payload: the DELETED event's, the one place left that keeps a
    deleted job's payload for the replay of its events (job_from_snapshot reads it)."""
    return f'{job_snapshot(job)[:-1]},"payload":{dumps(job.payload)}}}'


def _snapshot_text(job: Job, leave_out: tuple[str, ...] = ()) -> str:
    """job_snapshot's text without the members named in `leave_out`."""
    doc = dict(zip(_REQUIRED_FIELDS, _required_of(job), strict=True))
    schedule, http = job.schedule, job.http
    doc["schedule"] = _NULL if schedule is None else orjson.Fragment(schedule_text(schedule))
    doc["retry_policy"] = orjson.Fragment(_retry_text(job.retry_policy))
    doc["http"] = _NULL if http is None else orjson.Fragment(_http_text(http))
    for (name, default, document), value in zip(_OPTIONAL, _optional_of(job), strict=True):
        if value != default or type(value) is not type(default):
            doc[name] = orjson.Fragment(dumps(value)) if document else value
    for name in leave_out:
        doc.pop(name, None)
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError
        return _snapshot_members_text(job, leave_out)


def _snapshot_members_text(job: Job, leave_out: tuple[str, ...] = ()) -> str:
    """_snapshot_text's text, written member by member."""
    parts = []
    for name, key, encode, default in _SNAPSHOT_MEMBERS:
        if name in leave_out:
            continue
        value = getattr(job, name)
        if default is _ALWAYS or value != default or type(value) is not type(default):
            parts.append(key + encode(value))
    return "{" + ",".join(parts) + "}"


def _http_text(http: HttpTarget) -> str:
    return dumps(http_to_doc(http))


_NULL = orjson.Fragment(b"null")
_required_of = operator.attrgetter(*_REQUIRED_FIELDS)
_optional_of = operator.attrgetter(*(name for name, _ in _OPTIONAL_FIELDS))
# (field, its default, whether it holds a document that may hold floats)
_OPTIONAL = tuple(
    (name, default, name in ("result", "progress")) for name, default in _OPTIONAL_FIELDS
)


_ALWAYS = object()  # a member every snapshot holds
# JSON text of a str as `dumps` writes it (not ASCII-escaped)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def _json_value(value: Any) -> str:
    """`dumps(value)`, for the common scalars without the encoder's set-up."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str or kind is JobState:
        return _encode_str(value)
    if value is None:
        return "null"
    if kind is dict and not value:  # labels, mostly
        return "{}"
    return dumps(value)


def _nullable(encode: Callable[[Any], str]) -> Callable[[Any], str]:
    return lambda value: "null" if value is None else encode(value)


# (field, `"field":`, its encoder, its default or _ALWAYS) in the order of the sorted keys
_SNAPSHOT_MEMBERS: tuple[tuple[str, str, Callable[[Any], str], Any], ...] = tuple(
    sorted(
        [
            *((name, f'"{name}":', _json_value, _ALWAYS) for name in _REQUIRED_FIELDS),
            # shared by many jobs: their encodings are cached
            ("schedule", '"schedule":', _nullable(schedule_text), _ALWAYS),
            ("retry_policy", '"retry_policy":', _retry_text, _ALWAYS),
            ("http", '"http":', _nullable(_http_text), _ALWAYS),
            *((name, f'"{name}":', _json_value, default) for name, default in _OPTIONAL_FIELDS),
        ],
        key=lambda member: member[0],
    )
)


def snapshot_members() -> list[tuple[str, bool, Any]]:
    """(field, whether every snapshot holds it, its default) of the members job_snapshot
    writes, in its order (snapshot_sql writes the same text in SQL)."""
    return [(name, default is _ALWAYS, default) for name, _, _, default in _SNAPSHOT_MEMBERS]


# per job in new_job_snapshots; the rest of a new job's snapshot is shared by its batch
_OWN_FIELDS = ("id", "idempotency_key", "labels", "seq")


def new_job_snapshots(new_jobs: list[Job]) -> list[str]:
    """job_snapshot of each just-created job (every field past the required ones at its
    default, but seq), the parts that jobs of a batch share encoded once."""
    tails: dict[tuple[Any, ...], str] = {}
    out: list[str] = []
    for job in new_jobs:
        # strings (and None) only: the fast encoder spells them as dumps does
        labels = dumps_floatless(job.labels) if job.labels else "{}"
        idem = "null" if job.idempotency_key is None else dumps_floatless(job.idempotency_key)
        out.append(
            f'{{"id":{dumps_floatless(job.id)},"idempotency_key":{idem},'
            f'"labels":{labels},"seq":{job.seq}{_snapshot_tail(job, tails)}'
        )
    return out


def new_job_snapshot_tails(new_jobs: list[Job], alike: bool = False) -> list[tuple[int, str]]:
    """The new_job_snapshots texts as runs of consecutive jobs, (count, tail) each: a job's
    text is `{"id":<id>,"idempotency_key":<key>,"labels":<labels>,"seq":<seq>` + its run's
    tail (id, key and labels as dumps_floatless spells them, labels "{}" when empty).
    `alike`: the jobs differ in nothing but ids, payloads and times (see shared_job_values),
    so only a change of times can start a run."""
    tails: dict[tuple[Any, ...], str] = {}
    runs: list[tuple[int, str]] = []
    count, last, times = 0, "", None
    for job in new_jobs:
        if alike:
            now = (job.create_time, job.update_time, job.next_run_time)
            if now == times:
                count += 1
                continue
            times = now
        tail = _snapshot_tail(job, tails)
        if tail is not last and count:
            runs.append((count, last))
            count = 0
        count += 1
        last = tail
    if count:
        runs.append((count, last))
    return runs


def _snapshot_tail(job: Job, tails: dict[tuple[Any, ...], str]) -> str:
    """What follows the seq in job_snapshot of a just-created job (encoded once per batch for
    the jobs that share it, in `tails`)."""
    http = job.http
    key = (
        job.queue,
        job.task,
        job.priority,
        job.state,
        job.schedule,
        job.retry_policy,
        job.timeout,
        job.create_time,
        job.update_time,
        job.next_run_time,
        None if http is None else http.key(),
    )
    tail = tails.get(key)
    if tail is None:
        # a single enqueue encodes one per job
        tail = tails[key] = "," + _snapshot_text(job, _OWN_FIELDS)[1:]  # without its "{"
    return tail


def job_from_snapshot(text: str, payload: dict[str, Any] | None) -> Job:
    """The job of an event's snapshot, with `payload` (the job's row's); None: the row is
    gone, and the snapshot's own payload (a DELETED event's) or {} stands in."""
    doc = loads(text)
    kept = doc.pop("payload", None)
    if payload is None:
        payload = kept if kept is not None else {}
    fields = _known_fields(Job, doc)
    fields["state"] = JobState(doc["state"])
    schedule, http = doc.get("schedule"), doc.get("http")
    fields["schedule"] = None if schedule is None else schedule_from_doc(schedule)
    fields["retry_policy"] = retry_from_doc(doc.get("retry_policy") or {})
    fields["http"] = None if http is None else http_from_doc(http)
    return Job(payload=payload, **fields)


def attempt_from_row(row: RowMapping) -> Attempt:
    return Attempt(
        id=row["id"],
        job_id=row["job_id"],
        execution=row["execution"],
        number=row["number"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        outcome=AttemptOutcome(row["outcome"]),
        error=row["error"],
        worker_id=row["worker_id"],
        result=load_or_none(row["result"]),
    )
