"""The job commands, each declared once with `@command`: arguments in, RPC, output out."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobwheel.client.cli import render
from jobwheel.client.cli.base import (
    Command,
    Spec,
    UsageError,
    add,
    command,
    duration,
    filter_from,
    pairs,
    positive_int,
    read_payload,
    schedule_from,
)
from jobwheel.client.cli.ids import resolve
from jobwheel.client.errors import JobwheelError
from jobwheel.client.filters import job_filter
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

BULK_HELP = (
    "a job ID (or an unambiguous prefix) calls the single-job RPC; several IDs or filter "
    "flags (or --all) call the bulk RPC, which asks for confirmation (or needs --yes when "
    "stdin is not a terminal)"
)
ID_HELP = "job id, or an unambiguous prefix of one (at least 4 digits)"


def job_id_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", help=ID_HELP)


def schedule_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schedule (default: run now)")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="first run at this time")
    when.add_argument("--in", dest="delay", metavar="DURATION", help="first run after this delay")
    g.add_argument("--cron", metavar="EXPR", help="cron expression, e.g. '0 9 * * 1-5'")
    g.add_argument("--tz", metavar="ZONE", help="IANA time zone of --cron (default UTC)")
    g.add_argument("--every", metavar="DURATION", help="fixed interval between runs")
    g.add_argument("--limit", type=positive_int, metavar="N", help="at most N runs")
    g.add_argument("--end-at", metavar="TIME", help="no run at or after this time")
    g.add_argument("--jitter", metavar="DURATION", help="random delay added to each run")


def _enqueue_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="handler name")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--payload", metavar="JSON", help="the payload, a JSON object ('-': stdin)")
    src.add_argument(
        "--payload-file", metavar="FILE", help="read the payload from FILE ('-': stdin)"
    )
    p.add_argument("--queue", help="queue name (default: 'default')")
    p.add_argument("--priority", type=int, help="higher runs first")
    p.add_argument(
        "--label", dest="labels", action="append", metavar="K=V", help="a label (repeatable)"
    )
    p.add_argument("--idempotency-key", metavar="KEY", help="a repeat returns the existing job")
    p.add_argument("--timeout", metavar="DURATION", help="maximum duration of one attempt")
    p.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="attempts per execution (1: no retry)",
    )
    schedule_arguments(p)


@command("enqueue", "create a job", _enqueue_arguments)
def enqueue(c: Command) -> int:
    a = c.args
    resp = c.client.enqueue_job(
        a.task,
        payload=read_payload(a),
        queue=a.queue or "",
        labels=pairs(a.labels, "--label"),
        priority=a.priority or 0,
        idempotency_key=a.idempotency_key or "",
        timeout=duration(a.timeout),
        max_attempts=a.max_attempts,
        **schedule_from(a),
    )
    if resp.already_exists and not c.json:
        print(f"jobwheel: idempotency key matched job {resp.job.id}", file=sys.stderr)
    c.show_job(resp.job, resp)
    return 0


@command("get", "show a job", job_id_argument)
def get(c: Command) -> int:
    job = c.client.get_job(resolve(c.client, c.args.id))
    c.show_job(job, pb.GetJobResponse(job=job))
    return 0


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        metavar="N",
        help="show at most N jobs (default 50)",
    )
    p.add_argument("--all", action="store_true", help="every matching job, page after page")
    p.add_argument("--order", choices=("desc", "asc"), default="desc", help="by creation time")


@command("list", "list jobs", _list_arguments, filters=True)
def list_jobs(c: Command) -> int:
    a = c.args
    flt = filter_from(a)
    order = pb.JOB_ORDER_CREATE_TIME_ASC if a.order == "asc" else pb.JOB_ORDER_CREATE_TIME_DESC
    limit = None if a.all else a.limit
    page_size = 1000 if limit is None else min(limit, 1000)
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
    described = render.to_json(flt, indent=None) if flt.ByteSize() else "nothing: every job"
    try:
        count = f"{c.client.get_job_stats(flt).total} "
    except JobwheelError:
        count = ""  # stats are a courtesy here, not a requirement
    answer = input(f"{verb} {count}jobs matching {described}? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("aborted")


_SINGLE = {
    "cancel": lambda c, i: c.client.cancel_job(i, reason=c.args.reason),
    "retry": lambda c, i: c.client.retry_job(i, delay=duration(c.args.delay)),
    "pause": lambda c, i: c.client.pause_job(i),
    "resume": lambda c, i: c.client.resume_job(i),
    "delete": lambda c, i: c.client.delete_job(i),
}
_BULK = {
    "cancel": lambda c, f: c.client.cancel_jobs(f, reason=c.args.reason, all=c.args.all),
    "retry": lambda c, f: c.client.retry_jobs(f, delay=duration(c.args.delay), all=c.args.all),
    "pause": lambda c, f: c.client.pause_jobs(f, all=c.args.all),
    "resume": lambda c, f: c.client.resume_jobs(f, all=c.args.all),
    "delete": lambda c, f: c.client.delete_jobs(f, all=c.args.all),
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
    verb = c.args.command
    if c.args.all and c.args.ids:
        raise UsageError(f"{verb}: --all acts on every job the filter flags match; give no IDs")
    ids = [resolve(c.client, i) for i in c.args.ids]
    flt = filter_from(c.args, ids)
    by_filter = flt.ByteSize() != job_filter(ids=ids).ByteSize() or flt.HasField("recurring")
    if not ids and not by_filter and not c.args.all:
        raise UsageError(
            f"{verb}: give a job ID, filter flags or --all (see jobwheel {verb} --help)"
        )
    if len(ids) == 1 and not by_filter:
        job = _SINGLE[verb](c, ids[0])
        if verb == "delete":
            c.show(pb.DeleteJobResponse(), lambda: f"deleted {ids[0]}")
        else:
            c.show_job(job, getattr(pb, f"{verb.capitalize()}JobResponse")(job=job))
        return 0
    if by_filter or c.args.all:
        _confirm(c, verb, flt)
    count = _BULK[verb](c, flt)
    response = getattr(pb, f"{verb.capitalize()}JobsResponse")(count=count)
    c.show(response, lambda: f"{_DONE[verb]} {count} job{'s' if count != 1 else ''}")
    return 0


def _manage_arguments(verb: str) -> Any:
    def arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("ids", nargs="*", metavar="ID", help=BULK_HELP)
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument(
            "--all",
            action="store_true",
            help="allow a filter that matches every job (no filter flags, or every --state): "
            "the server refuses one without it",
        )
        if verb == "cancel":
            p.add_argument("--reason", default="", help="stored as the cancel reason")
        if verb == "retry":
            p.add_argument("--delay", metavar="DURATION", help="wait this long before running")

    return arguments


for _verb, _help in (
    ("cancel", "cancel jobs (running ones too)"),
    ("retry", "run FAILED or CANCELLED jobs again"),
    ("pause", "pause jobs"),
    ("resume", "resume PAUSED jobs"),
    ("delete", "delete jobs (not RUNNING ones) with their history"),
):
    add(Spec(_verb, _help, manage, _manage_arguments(_verb), filters=True))


def _reschedule_arguments(p: argparse.ArgumentParser) -> None:
    job_id_argument(p)
    schedule_arguments(p)


@command("reschedule", "change a job's start time or schedule", _reschedule_arguments)
def reschedule(c: Command) -> int:
    when = schedule_from(c.args)
    if not when:
        raise UsageError("reschedule: give --at, --in, --cron or --every")
    job = c.client.reschedule_job(resolve(c.client, c.args.id), **when)
    c.show_job(job, pb.RescheduleJobResponse(job=job))
    return 0


@command("trigger", "run a job now, keeping its schedule", job_id_argument)
def trigger(c: Command) -> int:
    job = c.client.trigger_job(resolve(c.client, c.args.id))
    c.show_job(job, pb.TriggerJobResponse(job=job))
    return 0


@command("history", "list a job's attempts", job_id_argument)
def history(c: Command) -> int:
    job_id = resolve(c.client, c.args.id)
    first = c.client.list_job_attempts(job_id, page_size=1000)
    resp = pb.ListJobAttemptsResponse()
    resp.CopyFrom(first)
    token = first.next_page_token
    while token:
        page = c.client.list_job_attempts(job_id, page_size=1000, page_token=token)
        resp.attempts.extend(page.attempts)
        token = page.next_page_token
    resp.next_page_token = ""
    c.show(resp, lambda: render.attempts_table(resp))
    return 0


@command("stats", "counts and rates of the matching jobs", filters=True)
def stats(c: Command) -> int:
    resp = c.client.get_job_stats(filter_from(c.args))
    c.show(resp, lambda: render.stats_text(resp))
    return 0
