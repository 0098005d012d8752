"""Model -> proto conversion (the reverse direction, with validation, is in validate.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict, ParseDict
from jobwheel.server import failures, model
from jobwheel.server.api import wire
from jobwheel.v1 import job_pb2, job_service_pb2

JOB_STATE_TO_PROTO = {
    model.JobState.SCHEDULED: job_pb2.JOB_STATE_SCHEDULED,
    model.JobState.QUEUED: job_pb2.JOB_STATE_QUEUED,
    model.JobState.RUNNING: job_pb2.JOB_STATE_RUNNING,
    model.JobState.RETRYING: job_pb2.JOB_STATE_RETRYING,
    model.JobState.COMPLETED: job_pb2.JOB_STATE_COMPLETED,
    model.JobState.FAILED: job_pb2.JOB_STATE_FAILED,
    model.JobState.CANCELLED: job_pb2.JOB_STATE_CANCELLED,
    model.JobState.PAUSED: job_pb2.JOB_STATE_PAUSED,
}
JOB_STATE_FROM_PROTO = {v: k for k, v in JOB_STATE_TO_PROTO.items()}

OVERLAP_TO_PROTO = {
    model.OverlapPolicy.SKIP: job_pb2.OVERLAP_POLICY_SKIP,
    model.OverlapPolicy.BUFFER_ONE: job_pb2.OVERLAP_POLICY_BUFFER_ONE,
    model.OverlapPolicy.ALLOW_ALL: job_pb2.OVERLAP_POLICY_ALLOW_ALL,
    model.OverlapPolicy.CANCEL_OTHER: job_pb2.OVERLAP_POLICY_CANCEL_OTHER,
}
MISFIRE_TO_PROTO = {
    model.MisfirePolicy.SKIP: job_pb2.MISFIRE_POLICY_SKIP,
    model.MisfirePolicy.RUN_ONCE: job_pb2.MISFIRE_POLICY_RUN_ONCE,
    model.MisfirePolicy.RUN_ALL: job_pb2.MISFIRE_POLICY_RUN_ALL,
}
DST_GAP_TO_PROTO = {
    model.DstGapPolicy.SHIFT_FORWARD: job_pb2.DST_GAP_POLICY_SHIFT_FORWARD,
    model.DstGapPolicy.SKIP: job_pb2.DST_GAP_POLICY_SKIP,
}
DST_FOLD_TO_PROTO = {
    model.DstFoldPolicy.FIRST: job_pb2.DST_FOLD_POLICY_FIRST,
    model.DstFoldPolicy.SECOND: job_pb2.DST_FOLD_POLICY_SECOND,
    model.DstFoldPolicy.BOTH: job_pb2.DST_FOLD_POLICY_BOTH,
}
ATTEMPT_OUTCOME_TO_PROTO = {
    model.AttemptOutcome.RUNNING: job_pb2.ATTEMPT_OUTCOME_RUNNING,
    model.AttemptOutcome.SUCCEEDED: job_pb2.ATTEMPT_OUTCOME_SUCCEEDED,
    model.AttemptOutcome.FAILED: job_pb2.ATTEMPT_OUTCOME_FAILED,
    model.AttemptOutcome.TIMED_OUT: job_pb2.ATTEMPT_OUTCOME_TIMED_OUT,
    model.AttemptOutcome.CANCELLED: job_pb2.ATTEMPT_OUTCOME_CANCELLED,
    model.AttemptOutcome.LOST: job_pb2.ATTEMPT_OUTCOME_LOST,
}
EVENT_TYPE_TO_PROTO = {
    model.EventType.ENQUEUED: job_pb2.JOB_EVENT_TYPE_ENQUEUED,
    model.EventType.SCHEDULED: job_pb2.JOB_EVENT_TYPE_SCHEDULED,
    model.EventType.QUEUED: job_pb2.JOB_EVENT_TYPE_QUEUED,
    model.EventType.STARTED: job_pb2.JOB_EVENT_TYPE_STARTED,
    model.EventType.ATTEMPT_FAILED: job_pb2.JOB_EVENT_TYPE_ATTEMPT_FAILED,
    model.EventType.RETRY_SCHEDULED: job_pb2.JOB_EVENT_TYPE_RETRY_SCHEDULED,
    model.EventType.COMPLETED: job_pb2.JOB_EVENT_TYPE_COMPLETED,
    model.EventType.FAILED: job_pb2.JOB_EVENT_TYPE_FAILED,
    model.EventType.CANCELLED: job_pb2.JOB_EVENT_TYPE_CANCELLED,
    model.EventType.PAUSED: job_pb2.JOB_EVENT_TYPE_PAUSED,
    model.EventType.RESUMED: job_pb2.JOB_EVENT_TYPE_RESUMED,
    model.EventType.RESCHEDULED: job_pb2.JOB_EVENT_TYPE_RESCHEDULED,
    model.EventType.DELETED: job_pb2.JOB_EVENT_TYPE_DELETED,
    model.EventType.MISFIRE_SKIPPED: job_pb2.JOB_EVENT_TYPE_MISFIRE_SKIPPED,
    model.EventType.PROGRESS: job_pb2.JOB_EVENT_TYPE_PROGRESS,
    model.EventType.ATTEMPT_LOST: job_pb2.JOB_EVENT_TYPE_ATTEMPT_LOST,
}


def timestamp(us: model.Micros) -> timestamp_pb2.Timestamp:
    # clamped: a row stored before times were checked must not make a reply undecodable
    seconds, micros = divmod(model.clamp_time(us), 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1_000)


def duration(us: model.Micros) -> duration_pb2.Duration:
    # Duration wants seconds and nanos of the same sign.
    sign = -1 if us < 0 else 1
    seconds, micros = divmod(abs(us), 1_000_000)
    return duration_pb2.Duration(seconds=sign * seconds, nanos=sign * micros * 1_000)


def value(data: Any) -> struct_pb2.Value:
    return ParseDict(data, struct_pb2.Value())


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def schedule_to_proto(s: model.Schedule) -> job_pb2.Schedule:
    out = job_pb2.Schedule(
        cron=s.cron,
        time_zone=s.time_zone,
        limit=s.limit,
        overlap_policy=OVERLAP_TO_PROTO[s.overlap_policy],
        misfire_policy=MISFIRE_TO_PROTO[s.misfire_policy],
        dst_gap_policy=DST_GAP_TO_PROTO[s.dst_gap_policy],
        dst_fold_policy=DST_FOLD_TO_PROTO[s.dst_fold_policy],
    )
    if s.start_time is not None:
        out.start_time.CopyFrom(timestamp(s.start_time))
    if s.interval is not None:
        out.interval.CopyFrom(duration(s.interval))
    if s.end_time is not None:
        out.end_time.CopyFrom(timestamp(s.end_time))
    if s.jitter:
        out.jitter.CopyFrom(duration(s.jitter))
    if s.recurring:
        out.catchup_window.CopyFrom(duration(s.catchup_window))
    return out


def retry_policy_to_proto(p: model.RetryPolicy) -> job_pb2.RetryPolicy:
    return job_pb2.RetryPolicy(
        max_attempts=p.max_attempts,
        initial_backoff=duration(p.initial_backoff),
        max_backoff=duration(p.max_backoff),
        multiplier=p.multiplier,
        jitter=p.jitter,
    )


def job_to_proto(job: model.Job) -> job_pb2.Job:
    out = job_pb2.Job(
        id=job.id,
        queue=job.queue,
        task=job.task,
        payload=struct(job.payload),
        labels=job.labels,
        priority=job.priority,
        state=JOB_STATE_TO_PROTO[job.state],
        retry_policy=retry_policy_to_proto(job.retry_policy),
        idempotency_key=job.idempotency_key or "",
        attempt=job.attempt,
        execution_count=job.execution_count,
        create_time=timestamp(job.create_time),
        update_time=timestamp(job.update_time),
        recurring=job.recurring,
        cancel_reason=job.cancel_reason,
        skipped_count=job.skipped_count,
        worker_id=job.worker_id,
    )
    if job.last_error:
        error = failures.split(job.last_error)
        out.last_error = error.summary
        out.last_error_type = error.type
        out.last_error_traceback = error.traceback
    if job.schedule is not None:
        out.schedule.CopyFrom(schedule_to_proto(job.schedule))
    if job.timeout is not None:
        out.timeout.CopyFrom(duration(job.timeout))
    if job.next_run_time is not None:
        out.next_run_time.CopyFrom(timestamp(job.next_run_time))
    if job.start_time is not None:
        out.start_time.CopyFrom(timestamp(job.start_time))
    if job.end_time is not None:
        out.end_time.CopyFrom(timestamp(job.end_time))
    if job.result is not None:
        out.result.CopyFrom(value(job.result))
    if job.http is not None:
        out.http.CopyFrom(
            job_pb2.HttpTarget(url=job.http.url, method=job.http.method, headers=job.http.headers)
        )
    if job.progress is not None:
        out.progress.CopyFrom(struct(job.progress))
    return out


def attempt_to_proto(a: model.Attempt) -> job_pb2.Attempt:
    out = job_pb2.Attempt(
        id=a.id,
        job_id=a.job_id,
        execution=a.execution,
        number=a.number,
        start_time=timestamp(a.start_time),
        outcome=ATTEMPT_OUTCOME_TO_PROTO[a.outcome],
        worker_id=a.worker_id,
    )
    if a.error:
        error = failures.split(a.error)
        out.error = error.summary
        out.error_type = error.type
        out.traceback = error.traceback
    if a.end_time is not None:
        out.end_time.CopyFrom(timestamp(a.end_time))
        out.duration.CopyFrom(duration(a.end_time - a.start_time))
    if a.result is not None:
        out.result.CopyFrom(value(a.result))
    return out


def event_document(event: model.Event) -> dict[str, Any]:
    """An event as the JSON document POSTed to event subscribers (the job in the proto's
    JSON mapping)."""
    return {
        "type": f"job.{event.type.value}",
        "revision": event.revision,
        "timestamp": timestamp(event.time).ToJsonString(),
        "job": MessageToDict(job_to_proto(event.job)),
    }


# Job fields (and their numbers) that CreatedJobs sets per job
_OWN_FIELDS = (
    "id",
    "payload",
    "labels",
    "idempotency_key",
    "create_time",
    "update_time",
    "next_run_time",
)
_FIELDS = job_pb2.Job.DESCRIPTOR.fields_by_name
_ID, _PAYLOAD, _LABELS, _IDEMPOTENCY_KEY, _CREATE_TIME, _UPDATE_TIME, _NEXT_RUN_TIME = (
    wire.tag(_FIELDS[name].number) for name in _OWN_FIELDS
)
# the last field of each run of a job's own fields (id | payload, labels | idempotency_key |
# the three times): the template's fields numbered between one and the next follow that run,
# so that every field is written in field number order, as the protobuf runtime writes it
_OWN_SPOTS = tuple(_FIELDS[name].number for name in ("id", "labels", "idempotency_key"))
_OWN_SPOTS += (_FIELDS["next_run_time"].number,)
_Cuts = tuple[bytes, bytes, bytes, bytes]
_JOB = wire.tag(job_service_pb2.EnqueueJobResponse.DESCRIPTOR.fields_by_name["job"].number)
_RESULTS = wire.tag(
    job_service_pb2.BatchEnqueueJobsResponse.DESCRIPTOR.fields_by_name["results"].number
)


def _struct_bytes(data: dict[str, Any]) -> bytes:
    return struct(data).SerializeToString()


class CreatedJobs:
    """Job messages of jobs just created, equal to job_to_proto of the Job the insert stores
    (storage.convert.job_from_new), built without that Job: what jobs share (queue, task,
    state, policies, schedule...) is converted once into a template that each job's message
    copies, then its own fields are set. A reply copies the request's payload message when it
    is the stored payload's message (see validate.new_job_from_proto's `reply_payloads`)."""

    MAX_TEMPLATES = 256

    def __init__(self) -> None:
        self._templates: dict[tuple[Any, ...], job_pb2.Job] = {}
        self._times: dict[model.Micros, timestamp_pb2.Timestamp] = {}
        # by id() of a template (which it keeps alive): its encoding without _OWN_FIELDS
        self._encoded_templates: dict[int, tuple[job_pb2.Job, _Cuts]] = {}
        self._encoded_times: dict[tuple[model.Micros, model.Micros | None], bytes] = {}

    def proto(self, new: model.NewJob, payload: struct_pb2.Struct | None) -> job_pb2.Job:
        out = job_pb2.Job()
        self.fill(out, new, payload)
        return out

    def fill(self, out: job_pb2.Job, new: model.NewJob, payload: struct_pb2.Struct | None) -> None:
        """Makes `out` (an empty message, or a field of a reply) the created job's message."""
        out.CopyFrom(self._template(new))
        out.id = new.id
        if new.labels:
            out.labels.update(new.labels)
        if new.idempotency_key:
            out.idempotency_key = new.idempotency_key
        out.payload.CopyFrom(struct(new.payload) if payload is None else payload)
        created = self._time(new.create_time)
        out.create_time.CopyFrom(created)
        out.update_time.CopyFrom(created)
        if new.next_run_time is not None:
            out.next_run_time.CopyFrom(self._time(new.next_run_time))

    def encoded(
        self, news: Sequence[model.NewJob], payloads: Sequence[struct_pb2.Struct | None]
    ) -> bytes:
        """BatchEnqueueJobsResponse.results of the jobs `news` as created (what fill gives),
        on the wire; as long as the reply's canonical encoding."""
        out: list[bytes] = []
        append = out.append
        varint = wire.varint
        shared: tuple[Any, ...] = ()
        after_id = after_labels = after_key = times = b""
        for new, payload in zip(news, payloads, strict=True):
            # consecutive jobs of a batch mostly share all but their own fields (ids of objects
            # the jobs in `news` hold: none is freed and its id reused during the loop)
            key = (
                new.queue,
                new.task,
                new.priority,
                new.state,
                new.timeout,
                new.create_time,
                new.next_run_time,
                id(new.schedule),
                id(new.retry_policy),
                id(new.http),
            )
            if key != shared:
                shared = key
                after_id, after_labels, after_key, after_times = self._template_bytes(new)
                times = self._times_bytes(new.create_time, new.next_run_time) + after_times
            job_id = new.id.encode()
            body = (
                payload.SerializeToString() if payload is not None else _struct_bytes(new.payload)
            )
            if new.labels or new.idempotency_key:
                parts = [_ID, varint(len(job_id)), job_id, after_id, _PAYLOAD, varint(len(body))]
                parts.append(body)
                for label, value in new.labels.items():
                    parts.append(wire.field(_LABELS, wire.string_map_entry(label, value)))
                parts.append(after_labels)
                if new.idempotency_key:
                    parts.append(wire.field(_IDEMPOTENCY_KEY, new.idempotency_key.encode()))
                parts += (after_key, times)
                job = b"".join(parts)
            else:
                job = b"".join(
                    (
                        _ID,
                        varint(len(job_id)),
                        job_id,
                        after_id,
                        _PAYLOAD,
                        varint(len(body)),
                        body,
                        after_labels,
                        after_key,
                        times,
                    )
                )
            size = varint(len(job))
            # results entry: EnqueueJobResponse { job } (already_exists: false)
            append(_RESULTS)
            append(varint(len(_JOB) + len(size) + len(job)))
            append(_JOB)
            append(size)
            append(job)
        return b"".join(out)

    def _template_bytes(self, new: model.NewJob) -> _Cuts:
        """The template's encoding without the fields each job sets itself, cut where those
        go (see _OWN_SPOTS): every field is then written once, in field number order, as the
        protobuf runtime writes the reply."""
        template = self._template(new)
        found = self._encoded_templates.get(id(template))
        if found is None or found[0] is not template:
            cuts: list[bytes] = []
            for low, high in zip(_OWN_SPOTS, (*_OWN_SPOTS[1:], 1 << 29), strict=True):
                part = job_pb2.Job()
                part.CopyFrom(template)
                for field, _ in part.ListFields():
                    if field.name in _OWN_FIELDS or not low < field.number < high:
                        part.ClearField(field.name)
                cuts.append(part.SerializeToString())
            if len(self._encoded_templates) >= self.MAX_TEMPLATES:
                self._encoded_templates.clear()
            after_id, after_labels, after_key, after_times = cuts
            found = (template, (after_id, after_labels, after_key, after_times))
            self._encoded_templates[id(template)] = found
        return found[1]

    def _times_bytes(self, created: model.Micros, next_run: model.Micros | None) -> bytes:
        """create_time, update_time (= created) and next_run_time fields, encoded."""
        found = self._encoded_times.get((created, next_run))
        if found is None:
            stamp = self._time(created).SerializeToString()
            found = wire.field(_CREATE_TIME, stamp) + wire.field(_UPDATE_TIME, stamp)
            if next_run is not None:
                found += wire.field(_NEXT_RUN_TIME, self._time(next_run).SerializeToString())
            if len(self._encoded_times) >= self.MAX_TEMPLATES:
                self._encoded_times.clear()
            self._encoded_times[(created, next_run)] = found
        return found

    def _time(self, us: model.Micros) -> timestamp_pb2.Timestamp:
        ts = self._times.get(us)
        if ts is None:
            if len(self._times) >= self.MAX_TEMPLATES:
                self._times.clear()
            ts = self._times[us] = timestamp(us)
        return ts

    def _template(self, new: model.NewJob) -> job_pb2.Job:
        http = new.http
        key = (
            new.queue,
            new.task,
            new.priority,
            new.state,
            new.schedule,
            new.retry_policy,
            new.timeout,
            None if http is None else http.key(),
        )
        found = self._templates.get(key)
        if found is None:
            if len(self._templates) >= self.MAX_TEMPLATES:
                self._templates.clear()
            shared = model.Job(
                id="",
                queue=new.queue,
                task=new.task,
                payload={},
                labels={},
                priority=new.priority,
                state=new.state,
                schedule=new.schedule,
                retry_policy=new.retry_policy,
                timeout=new.timeout,
                idempotency_key=None,
                http=http,
                create_time=0,
                update_time=0,
                next_run_time=None,
            )
            found = self._templates[key] = job_to_proto(shared)
        return found
