"""One function per CLI command: arguments in, RPC, rendered output out; returns the exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobwheel.client import convert
from jobwheel.client.cli import render
from jobwheel.client.errors import JobwheelError
from jobwheel.client.filters import job_filter, state_name
from jobwheel.client.sync import Client
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb


class UsageError(Exception):
    """Bad command-line input found after parsing: exit code 2."""


def pairs(items: list[str] | None, what: str, json_values: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} must look like KEY=VALUE, not {item!r}")
        if json_values:
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    return out


def _duration(text: str | None) -> Any:
    return None if text is None else convert.parse_duration(text)


def _time(text: str | None) -> Any:
    return None if text is None else convert.parse_time(text)


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or () for v in item.split(",") if v]


def filter_from(args: argparse.Namespace) -> job_pb2.JobFilter:
    return job_filter(
        ids=[*(args.filter_ids or ()), *(getattr(args, "ids", None) or ())],
        states=_split(args.states),
        queues=_split(args.queues),
        tasks=_split(args.tasks),
        labels=pairs(args.labels, "--label"),
        payload=pairs(args.where, "--where", json_values=True),
        created_after=_time(args.created_after),
        created_before=_time(args.created_before),
        next_run_after=_time(args.next_run_after),
        next_run_before=_time(args.next_run_before),
        ended_after=_time(args.ended_after),
        ended_before=_time(args.ended_before),
        recurring=args.recurring,
    )


def schedule_from(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "at": _time(args.at),
        "delay": _duration(args.delay),
        "cron": args.cron,
        "time_zone": args.tz,
        "every": _duration(args.every),
        "limit": args.limit,
        "end_at": _time(args.end_at),
        "jitter": _duration(args.jitter),
    }
    return {k: v for k, v in given.items() if v is not None}


def read_payload(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.payload_file is not None:
        source = args.payload_file
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    elif args.payload is not None:
        text = sys.stdin.read() if args.payload == "-" else args.payload
    else:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise UsageError(f"the payload is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise UsageError("the payload must be a JSON object")
    return value


class Command:
    """The state every command shares: parsed arguments, a client and the output format."""

    def __init__(self, args: argparse.Namespace, client: Client) -> None:
        self.args = args
        self.client = client
        self.json = args.output == "json"

    def show(self, message: Any, text: Callable[[], str]) -> None:
        print(render.to_json(message) if self.json else text())

    def show_job(self, job: job_pb2.Job, response: Any = None) -> None:
        self.show(response if response is not None else job, lambda: render.job_detail(job))


def enqueue(c: Command) -> int:
    a = c.args
    resp = c.client.enqueue_job(
        a.task,
        payload=read_payload(a),
        queue=a.queue or "",
        labels=pairs(a.labels, "--label"),
        priority=a.priority or 0,
        idempotency_key=a.idempotency_key or "",
        timeout=_duration(a.timeout),
        max_attempts=a.max_attempts,
        **schedule_from(a),
    )
    if resp.already_exists and not c.json:
        print(f"jobwheel: idempotency key matched job {resp.job.id}", file=sys.stderr)
    c.show_job(resp.job, resp)
    return 0


def get(c: Command) -> int:
    job = c.client.get_job(c.args.id)
    c.show_job(job, pb.GetJobResponse(job=job))
    return 0


def list_jobs(c: Command) -> int:
    a = c.args
    flt = filter_from(a)
    order = pb.JOB_ORDER_CREATE_TIME_ASC if a.order == "asc" else pb.JOB_ORDER_CREATE_TIME_DESC
    limit = None if a.all else max(a.limit, 0)
    page_size = 1000 if limit is None else min(max(limit, 1), 1000)
    jobs: list[job_pb2.Job] = []
    token = ""
    while limit is None or len(jobs) < limit:
        page = c.client.list_jobs(flt, page_size=page_size, page_token=token, order=order)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
    more = bool(token) or (limit is not None and len(jobs) > limit)
    jobs = jobs if limit is None else jobs[:limit]
    if c.json:
        print(render.to_json(pb.ListJobsResponse(jobs=jobs)))
    else:
        print(render.jobs_table(jobs))
        if more:
            print(f"(showing {len(jobs)}; more match: raise --limit or use --all)", file=sys.stderr)
    return 0


def _confirm(c: Command, verb: str, flt: job_pb2.JobFilter) -> None:
    if c.args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            f"refusing to {verb} jobs by filter without --yes (stdin is not a terminal)"
        )
    described = render.to_json(flt, indent=None)
    try:
        count = f"{c.client.get_job_stats(flt).total} "
    except JobwheelError:
        count = ""  # stats are a courtesy here, not a requirement
    answer = input(f"{verb} {count}jobs matching {described}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("aborted")


_SINGLE = {
    "cancel": lambda c, i: c.client.cancel_job(i, reason=c.args.reason),
    "retry": lambda c, i: c.client.retry_job(i, delay=_duration(c.args.delay)),
    "pause": lambda c, i: c.client.pause_job(i),
    "resume": lambda c, i: c.client.resume_job(i),
    "delete": lambda c, i: c.client.delete_job(i),
}
_BULK = {
    "cancel": lambda c, f: c.client.cancel_jobs(f, reason=c.args.reason),
    "retry": lambda c, f: c.client.retry_jobs(f, delay=_duration(c.args.delay)),
    "pause": lambda c, f: c.client.pause_jobs(f),
    "resume": lambda c, f: c.client.resume_jobs(f),
    "delete": lambda c, f: c.client.delete_jobs(f),
}
_DONE = {
    "cancel": "cancelled",
    "retry": "retried",
    "pause": "paused",
    "resume": "resumed",
    "delete": "deleted",
}


def manage(c: Command) -> int:
    """cancel/retry/pause/resume/delete: one ID, several IDs, or a filter."""
    verb, ids = c.args.command, c.args.ids
    flt = filter_from(c.args)
    by_filter = flt.ByteSize() != job_filter(ids=ids).ByteSize() or flt.HasField("recurring")
    if not ids and not by_filter:
        raise UsageError(f"{verb}: give a job ID or filter flags (see jobwheel {verb} --help)")
    if len(ids) == 1 and not by_filter:
        job = _SINGLE[verb](c, ids[0])
        if verb == "delete":
            c.show(pb.DeleteJobResponse(), lambda: f"deleted {ids[0]}")
        else:
            c.show_job(job)
        return 0
    if by_filter:
        _confirm(c, verb, flt)
    count = _BULK[verb](c, flt)
    response = getattr(pb, f"{verb.capitalize()}JobsResponse")(count=count)
    c.show(response, lambda: f"{_DONE[verb]} {count} job{'s' if count != 1 else ''}")
    return 0


def reschedule(c: Command) -> int:
    when = schedule_from(c.args)
    if not when:
        raise UsageError("reschedule: give --at, --in, --cron or --every")
    job = c.client.reschedule_job(c.args.id, **when)
    c.show_job(job, pb.RescheduleJobResponse(job=job))
    return 0


def trigger(c: Command) -> int:
    job = c.client.trigger_job(c.args.id)
    c.show_job(job, pb.TriggerJobResponse(job=job))
    return 0


def history(c: Command) -> int:
    first = c.client.list_job_attempts(c.args.id, page_size=1000)
    resp = pb.ListJobAttemptsResponse()
    resp.CopyFrom(first)
    token = first.next_page_token
    while token:
        page = c.client.list_job_attempts(c.args.id, page_size=1000, page_token=token)
        resp.attempts.extend(page.attempts)
        token = page.next_page_token
    resp.next_page_token = ""
    c.show(resp, lambda: render.attempts_table(resp))
    return 0


def stats(c: Command) -> int:
    resp = c.client.get_job_stats(filter_from(c.args))
    c.show(resp, lambda: render.stats_text(resp))
    return 0


def queues(c: Command) -> int:
    qs = c.client.list_queues()
    c.show(pb.ListQueuesResponse(queues=qs), lambda: render.queues_table(qs))
    return 0


def workers(c: Command) -> int:
    ws = c.client.list_workers()
    c.show(pb.ListWorkersResponse(workers=ws), lambda: render.workers_table(ws))
    return 0


def queue(c: Command) -> int:
    a = c.args
    if a.queue_command == "update":
        if a.max_concurrency is None and a.max_rate is None:
            raise UsageError("queue update: give --max-concurrency and/or --max-rate")
        q = c.client.update_queue(
            a.name, max_concurrency=a.max_concurrency, max_dispatches_per_second=a.max_rate
        )
    elif a.queue_command == "pause":
        q = c.client.pause_queue(a.name)
    else:
        q = c.client.resume_queue(a.name)
    c.show(pb.PauseQueueResponse(queue=q), lambda: render.queues_table([q]))
    return 0


def preview(c: Command) -> int:
    a = c.args
    if not a.cron and not a.every:
        raise UsageError("preview: give a cron expression or --every")
    times = c.client.preview_schedule(
        count=a.count,
        after=_time(a.after),
        **{
            k: v
            for k, v in {"cron": a.cron, "time_zone": a.tz, "every": _duration(a.every)}.items()
            if v
        },
    )
    c.show(pb.PreviewScheduleResponse(fire_times=times), lambda: render.preview_table(times))
    return 0


def wait(c: Command) -> int:
    a = c.args

    def progress(job: job_pb2.Job) -> None:
        attempt = f" (attempt {job.attempt})" if job.attempt else ""
        print(f"{job.id}: {state_name(job.state)}{attempt}", file=sys.stderr, flush=True)

    timeout = _duration(a.timeout)
    job = c.client.wait_job(
        a.id,
        timeout=None if timeout is None else timeout.total_seconds(),
        poll_interval=convert.parse_duration(a.interval).total_seconds(),
        on_change=progress,
    )
    c.show_job(job, pb.GetJobResponse(job=job))
    return 0 if job.state == job_pb2.JOB_STATE_COMPLETED else 5
