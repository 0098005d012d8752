"""The argparse tree of the `jobwheel` command."""

from __future__ import annotations

import argparse

from jobwheel.client.policy import DEFAULT_SERVER

EXIT_CODES = """\
exit codes:
  0  success
  1  server or connection error (also: `wait` timed out)
  2  usage error, or the server rejected an argument (INVALID_ARGUMENT)
  3  not found (NOT_FOUND)
  4  the job's state does not allow it (FAILED_PRECONDITION)
  5  `wait`: the job ended FAILED or CANCELLED
"""

DESCRIPTION = """\
Enqueue, inspect and manage the jobs of a jobwheel server.

Durations are like 90s, 5m, 2h, 1h30m or a number of seconds; times are ISO 8601
(2030-01-31T09:00:00Z; without an offset, local time). `-o json` prints the RPC's
response as protobuf JSON (one document; `watch` prints one document per line)."""

BULK_HELP = (
    "one ID calls the single-job RPC; several IDs or filter flags call the bulk RPC, "
    "which asks for confirmation (or needs --yes when stdin is not a terminal)"
)


def _common(suppress: bool) -> argparse.ArgumentParser:
    """-o and --server, accepted before and after the command. Subcommands use
    SUPPRESS defaults so they do not overwrite a value given before the command."""
    p = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=default if suppress else "table",
        help="output format (default: table)",
    )
    p.add_argument(
        "--server",
        default=default if suppress else None,
        metavar="HOST:PORT",
        help=f"server address (default: $JOBWHEEL_SERVER or {DEFAULT_SERVER})",
    )
    for flag, env, what in (
        ("--token", "JOBWHEEL_TOKEN", "bearer token"),
        ("--tls-ca", "JOBWHEEL_TLS_CA", "PEM file of the CA that signed the server (TLS)"),
        ("--tls-cert", "JOBWHEEL_TLS_CERT", "PEM client certificate (mutual TLS)"),
        ("--tls-key", "JOBWHEEL_TLS_KEY", "PEM key of --tls-cert"),
    ):
        p.add_argument(flag, default=default if suppress else None, help=f"{what} (${env})")
    return p


def _filters() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("filter (every flag must match; repeated flags: any value)")
    add = g.add_argument
    add("--id", dest="filter_ids", action="append", metavar="ID", help="job id")
    add("--state", dest="states", action="append", metavar="STATE", help="e.g. failed,queued")
    add("--queue", dest="queues", action="append", metavar="NAME", help="queue name")
    add("--task", dest="tasks", action="append", metavar="NAME", help="task name")
    add("--label", dest="labels", action="append", metavar="K=V", help="label equals")
    add(
        "--where",
        dest="where",
        action="append",
        metavar="K=V",
        help="payload field equals (V as JSON if it parses)",
    )
    for field, what in (("created", "created"), ("next-run", "next run"), ("ended", "ended")):
        add(f"--{field}-after", metavar="TIME", help=f"{what} at or after")
        add(f"--{field}-before", metavar="TIME", help=f"{what} before")
    rec = g.add_mutually_exclusive_group()
    rec.add_argument(
        "--recurring",
        dest="recurring",
        action="store_const",
        const=True,
        help="only recurring jobs",
    )
    rec.add_argument(
        "--one-off", dest="recurring", action="store_const", const=False, help="only one-off jobs"
    )
    return p


def _schedule(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schedule (default: run now)")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="first run at this time")
    when.add_argument("--in", dest="delay", metavar="DURATION", help="first run after this delay")
    g.add_argument("--cron", metavar="EXPR", help="cron expression, e.g. '0 9 * * 1-5'")
    g.add_argument("--tz", metavar="ZONE", help="IANA time zone of --cron (default UTC)")
    g.add_argument("--every", metavar="DURATION", help="fixed interval between runs")
    g.add_argument("--limit", type=int, metavar="N", help="at most N runs")
    g.add_argument("--end-at", metavar="TIME", help="no run at or after this time")
    g.add_argument("--jitter", metavar="DURATION", help="random delay added to each run")


def build() -> argparse.ArgumentParser:
    common = _common(suppress=True)
    filters = _filters()
    parser = argparse.ArgumentParser(
        prog="jobwheel",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common, *parents],
        )

    p = cmd("enqueue", "create a job")
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
        "--max-attempts", type=int, metavar="N", help="attempts per execution (1: no retry)"
    )
    _schedule(p)

    cmd("get", "show a job").add_argument("id")

    p = cmd("list", "list jobs", filters)
    p.add_argument(
        "--limit", type=int, default=50, metavar="N", help="show at most N jobs (default 50)"
    )
    p.add_argument("--all", action="store_true", help="every matching job, page after page")
    p.add_argument("--order", choices=("desc", "asc"), default="desc", help="by creation time")

    for name, help in (
        ("cancel", "cancel jobs (running ones too)"),
        ("retry", "run FAILED or CANCELLED jobs again"),
        ("pause", "pause jobs"),
        ("resume", "resume PAUSED jobs"),
        ("delete", "delete jobs (not RUNNING ones) with their history"),
    ):
        p = cmd(name, help, filters)
        p.add_argument("ids", nargs="*", metavar="ID", help=BULK_HELP)
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        if name == "cancel":
            p.add_argument("--reason", default="", help="stored as the cancel reason")
        if name == "retry":
            p.add_argument("--delay", metavar="DURATION", help="wait this long before running")

    p = cmd("reschedule", "change a job's start time or schedule")
    p.add_argument("id")
    _schedule(p)

    cmd("trigger", "run a job now, keeping its schedule").add_argument("id")
    cmd("history", "list a job's attempts").add_argument("id")
    cmd("stats", "counts and rates of the matching jobs", filters)
    cmd("queues", "list queues")

    q = cmd("queue", "pause, resume or limit a queue")
    qsub = q.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    for action in ("pause", "resume"):
        qsub.add_parser(action, help=f"{action} a queue", parents=[common]).add_argument("name")
    u = qsub.add_parser("update", help="change a queue's limits", parents=[common])
    u.add_argument("name")
    u.add_argument("--max-concurrency", type=int, metavar="N", help="attempts running at once")
    u.add_argument(
        "--max-rate",
        type=float,
        metavar="PER_SECOND",
        help="attempts started per second (0: no limit)",
    )

    p = cmd("preview", "show the next fire times of a schedule")
    p.add_argument("cron", nargs="?", help="cron expression (or use --every)")
    p.add_argument("--tz", metavar="ZONE", help="IANA time zone (default UTC)")
    p.add_argument("--every", metavar="DURATION", help="an interval instead of a cron")
    p.add_argument("--count", type=int, default=10, metavar="N", help="how many (default 10)")
    p.add_argument("--after", metavar="TIME", help="start after this time (default now)")

    p = cmd("wait", "wait until a job is COMPLETED, FAILED or CANCELLED")
    p.add_argument("id")
    p.add_argument("--timeout", metavar="DURATION", help="give up after this long")
    p.add_argument("--interval", default="0.5s", metavar="DURATION", help="poll interval")

    p = cmd(
        "watch", "follow jobs live (a table on a terminal, one line per event otherwise)", filters
    )
    p.add_argument("--no-snapshot", action="store_true", help="only changes, not the current jobs")
    p.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="REVISION",
        help="replay changes after this revision",
    )
    return parser
