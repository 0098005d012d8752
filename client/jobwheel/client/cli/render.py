"""Output of the CLI: aligned tables for people, protobuf JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from jobwheel.client.filters import state_name
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb


def _tidy(value: Any) -> Any:
    """Struct numbers are doubles: show 3 rather than 3.0 when it is a whole number."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    return value


def to_dict(message: Message) -> Any:
    """Protobuf JSON with the proto's own field names (snake_case), as grpcurl prints it."""
    return _tidy(json_format.MessageToDict(message, preserving_proto_field_name=True))


def to_json(message: Message, *, indent: int | None = 2) -> str:
    return json.dumps(to_dict(message), indent=indent, ensure_ascii=False)


def print_json(message: Message, out: TextIO | None = None) -> None:
    print(to_json(message), file=out or sys.stdout)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    rows = [list(headers), *[[cell.replace("\n", " ") for cell in r] for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def stamp(moment: datetime) -> str:
    """The CLI's one time format: 2030-01-31 09:00:00Z in UTC, else with the offset."""
    offset = moment.utcoffset()
    if offset is None or not offset:
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")
    text = moment.strftime("%Y-%m-%d %H:%M:%S%z")
    return f"{text[:-2]}:{text[-2:]}"


def when(ts: timestamp_pb2.Timestamp) -> str:
    if ts.seconds == 0 and ts.nanos == 0:
        return "-"
    return stamp(ts.ToDatetime(tzinfo=UTC))


def duration(d: duration_pb2.Duration) -> str:
    total = d.ToTimedelta().total_seconds()
    if total < 1:
        return f"{total * 1000:.0f}ms"
    if total < 60:
        return f"{total:.3g}s"
    minutes, seconds = divmod(int(total), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def compact(value: Message) -> str:
    """A Struct or Value as one line of JSON."""
    if isinstance(value, struct_pb2.Value) and value.WhichOneof("kind") is None:
        return "-"
    return json.dumps(to_dict(value), separators=(",", ":"), ensure_ascii=False)


def labels(m: Any) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(m.items())) or "-"


def schedule(s: job_pb2.Schedule) -> str:
    parts = []
    if s.cron:
        parts.append(f"cron {s.cron!r}" + (f" {s.time_zone}" if s.time_zone else " UTC"))
    if s.HasField("interval"):
        parts.append(f"every {duration(s.interval)}")
    if s.limit:
        parts.append(f"limit {s.limit}")
    if s.HasField("end_time"):
        parts.append(f"until {when(s.end_time)}")
    return ", ".join(parts) or "once"


JOB_HEADERS = ("ID", "TASK", "QUEUE", "STATE", "ATTEMPT", "NEXT RUN", "CREATED")


def job_row(j: job_pb2.Job) -> list[str]:
    return [
        j.id,
        j.task,
        j.queue,
        state_name(j.state),
        str(j.attempt),
        when(j.next_run_time),
        when(j.create_time),
    ]


def jobs_table(jobs: Iterable[job_pb2.Job]) -> str:
    return table(JOB_HEADERS, [job_row(j) for j in jobs])


def job_detail(j: job_pb2.Job) -> str:
    rows: list[tuple[str, str]] = [
        ("id", j.id),
        ("task", j.task),
        ("queue", j.queue),
        ("state", state_name(j.state)),
        ("priority", str(j.priority)),
        ("labels", labels(j.labels)),
        ("payload", compact(j.payload)),
        ("schedule", schedule(j.schedule)),
        ("attempt", f"{j.attempt} of {j.retry_policy.max_attempts or '-'}"),
        ("executions", str(j.execution_count)),
        ("created", when(j.create_time)),
        ("updated", when(j.update_time)),
        ("next run", when(j.next_run_time)),
        ("started", when(j.start_time)),
        ("ended", when(j.end_time)),
    ]
    optional = [
        ("timeout", duration(j.timeout) if j.HasField("timeout") else ""),
        ("idempotency key", j.idempotency_key),
        ("http", f"{j.http.method or 'POST'} {j.http.url}" if j.http.url else ""),
        ("worker", j.worker_id),
        ("waiting", j.waiting_reason),
        ("last error", j.last_error),
        ("cancel reason", j.cancel_reason),
        ("skipped", str(j.skipped_count) if j.skipped_count else ""),
        ("progress", compact(j.progress) if j.HasField("progress") else ""),
        ("result", compact(j.result) if j.HasField("result") else ""),
    ]
    rows += [(k, v) for k, v in optional if v]
    width = max(len(k) for k, _ in rows) + 1
    text = "\n".join(f"{(k + ':').ljust(width)} {v}" for k, v in rows)
    return text + (
        f"\n\nlast traceback:\n{j.last_error_traceback}" if j.last_error_traceback else ""
    )


def attempts_table(resp: pb.ListJobAttemptsResponse) -> str:
    rows = [
        [
            str(a.execution),
            str(a.number),
            job_pb2.AttemptOutcome.Name(a.outcome).removeprefix("ATTEMPT_OUTCOME_"),
            when(a.start_time),
            duration(a.duration) if a.HasField("duration") else "-",
            a.worker_id or "-",
            a.error or (compact(a.result) if a.HasField("result") else ""),
        ]
        for a in resp.attempts
    ]
    body = table(("EXEC", "#", "OUTCOME", "STARTED", "DURATION", "WORKER", "ERROR/RESULT"), rows)
    totals = (
        f"executions: {resp.total_executions} started, {resp.successful_executions} succeeded, "
        f"{resp.failed_executions} failed"
    )
    tracebacks = [
        f"\nattempt {a.execution}.{a.number} traceback:\n{a.traceback}"
        for a in resp.attempts
        if a.traceback
    ]
    return "\n".join([body, "", totals, *tracebacks])


def stats_text(s: pb.GetJobStatsResponse) -> str:
    lines = [f"total: {s.total}"]
    if s.state_counts:
        lines += [
            "",
            table(
                ("STATE", "COUNT"), [[state_name(c.state), str(c.count)] for c in s.state_counts]
            ),
        ]
    if s.queue_counts:
        lines += ["", table(("QUEUE", "COUNT"), [[c.queue, str(c.count)] for c in s.queue_counts])]
        if s.queue_counts_truncated:
            lines.append(f"(the {len(s.queue_counts)} largest queues; more hold matching jobs)")
    lines += [
        "",
        f"success rate: {s.success_rate:.1%}",
        f"completed/s (last minute): {s.completed_per_second:.2f}",
        "run duration (last hour): "
        f"p50 {duration(s.run_duration_p50)}, p90 {duration(s.run_duration_p90)}, "
        f"p99 {duration(s.run_duration_p99)}",
    ]
    return "\n".join(lines)


def queues_table(queues: Iterable[job_pb2.Queue]) -> str:
    rows = [
        [
            q.name,
            "yes" if q.paused else "no",
            str(q.max_concurrency) if q.max_concurrency else "-",
            f"{q.max_dispatches_per_second:g}/s" if q.max_dispatches_per_second else "-",
            " ".join(f"{state_name(c.state).lower()}={c.count}" for c in q.state_counts) or "-",
        ]
        for q in queues
    ]
    return table(("QUEUE", "PAUSED", "CONCURRENCY", "RATE", "JOBS"), rows)


def workers_table(workers: Iterable[pb.Worker]) -> str:
    rows = [
        [
            w.id,
            "server" if w.kind == pb.WORKER_KIND_SERVER else "remote",
            when(w.last_seen_time),
            str(w.jobs_held),
            ",".join(w.queues) or "*",
            ",".join(w.tasks) or ("-" if w.kind == pb.WORKER_KIND_SERVER else "*"),
        ]
        for w in workers
    ]
    return table(("WORKER", "KIND", "LAST SEEN", "HELD", "QUEUES", "TASKS"), rows)


def preview_table(times: Iterable[pb.FireTime]) -> str:
    rows = []
    for t in times:
        flags = [name for name, on in (("dst-gap", t.dst_gap), ("dst-fold", t.dst_fold)) if on]
        rows.append([when(t.time), _local(t.local_time), ",".join(flags)])
    return table(("TIME (UTC)", "LOCAL", "NOTE"), rows)


def _local(text: str) -> str:
    try:
        return stamp(datetime.fromisoformat(text))
    except ValueError:
        return text


def subscriptions_table(subs: Iterable[pb.EventSubscription]) -> str:
    rows = [
        [
            s.id,
            ",".join(
                job_pb2.JobEventType.Name(t).removeprefix("JOB_EVENT_TYPE_").lower()
                for t in s.event_types
            ),
            when(s.create_time),
            s.url,
        ]
        for s in subs
    ]
    return table(("ID", "EVENTS", "CREATED", "URL"), rows)


def event_line(resp: pb.WatchJobsResponse) -> str:
    """One line per watch message, for pipes and logs."""
    kind = resp.WhichOneof("kind")
    if kind == "snapshot_end":
        return f"{resp.snapshot_end.revision}\tSNAPSHOT_END"
    if kind == "heartbeat":
        return f"{resp.heartbeat.revision}\tHEARTBEAT"
    e, j = resp.event, resp.event.job
    etype = job_pb2.JobEventType.Name(e.type).removeprefix("JOB_EVENT_TYPE_")
    return "\t".join([str(e.revision), etype, j.id, j.task, j.queue, state_name(j.state)])
