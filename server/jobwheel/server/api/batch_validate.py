"""Validation of a BatchEnqueueJobs request: the jobs it creates, or every field violation.

Most batches are plain jobs (queue, task, payload, maybe labels and a key; no schedule,
retry policy, timeout or HTTP target). Such a job passes a few quick checks that imply every
check of validate.new_job_from_proto; any other job, or one that fails a quick check, goes
through new_job_from_proto itself, which names the violations. The jobs and violations are
the same either way; only the cost differs.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import struct_pb2
from jobwheel.server import model
from jobwheel.server.api import validate
from jobwheel.server.api.fields import Violations, check_text, plain_json
from jobwheel.server.api.reply_size import MAX_JOB_FIELDS_BYTES
from jobwheel.server.rules.states import initial_state
from jobwheel.v1 import job_service_pb2

_DEFAULT_RETRY = model.RetryPolicy()
# fields that need new_job_from_proto's conversions
_INVOLVED = ("http", "schedule", "retry_policy", "timeout")


def new_jobs_from_batch(
    reqs: Sequence[job_service_pb2.EnqueueJobRequest],
    ids: Sequence[str],
    now: model.Micros,
    limits: validate.Limits,
    errors: Violations,
    reply_payloads: list[struct_pb2.Struct | None],
    first: int = 0,
) -> list[model.NewJob]:
    """new_job_from_proto of each request (prefix "jobs[i].", i counted from `first`), with
    ids[i - first]; appends to `reply_payloads` as it does."""
    names: set[str] = set()  # queue and task names that passed check_name
    # either size alone within its limit when the whole job is
    small = min(limits.max_payload_bytes, MAX_JOB_FIELDS_BYTES)
    state = initial_state(now, now)
    scratch = Violations()
    news: list[model.NewJob] = []
    for i, req in enumerate(reqs):
        new = None
        if not any(map(req.HasField, _INVOLVED)) and req.ByteSize() <= small:
            new = _plain_job(req, ids[i], now, state, names, scratch, reply_payloads)
        if new is None:
            new = validate.new_job_from_proto(
                req, f"jobs[{first + i}].", now, limits, errors, ids[i], reply_payloads
            )
        news.append(new)
    return news


def _plain_job(
    req: job_service_pb2.EnqueueJobRequest,
    job_id: str,
    now: model.Micros,
    state: model.JobState,
    names: set[str],
    scratch: Violations,
    reply_payloads: list[struct_pb2.Struct | None],
) -> model.NewJob | None:
    """The job of a request without involved fields, if it passes; else None (and nothing
    appended)."""
    queue = req.queue or model.DEFAULT_QUEUE
    task = req.task
    for name in (queue, task):
        if name not in names:
            if not validate.NAME_RE.match(name):
                return None
            names.add(name)
    doc = req.payload  # a new wrapper at each read: read once
    found = plain_json(doc, whole_ints=True)
    if found is None:
        return None
    payload, same = found
    labels: dict[str, str] = {}
    if req.labels:
        labels = dict(req.labels)
        validate.check_labels(labels, "labels", scratch)
    key = req.idempotency_key
    if key:
        check_text(
            key, "idempotency_key", scratch, max_chars=validate.MAX_IDEMPOTENCY_KEY, identifier=True
        )
    if scratch.items:
        scratch.items.clear()
        return None
    reply_payloads.append(doc if same else None)
    return model.NewJob(
        job_id,
        queue,
        task,
        payload,
        labels,
        req.priority,
        state,
        None,
        _DEFAULT_RETRY,
        None,
        key or None,
        None,
        now,
        now,
    )
