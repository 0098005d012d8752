"""Queue, worker, schedule-preview and event-subscription commands, each declared once."""

from __future__ import annotations

import argparse
import base64
import secrets

from jobwheel.client.cli import render
from jobwheel.client.cli.base import (
    Command,
    UsageError,
    command,
    count_int,
    duration,
    positive_int,
    rate,
    time,
)
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb


@command("queues", "list queues")
def queues(c: Command) -> int:
    qs = c.client.list_queues()
    c.show(pb.ListQueuesResponse(queues=qs), lambda: render.queues_table(qs))
    return 0


@command("workers", "list server replicas and the remote workers seen lately")
def workers(c: Command) -> int:
    ws = c.client.list_workers()
    c.show(pb.ListWorkersResponse(workers=ws), lambda: render.workers_table(ws))
    return 0


def _queue_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    for action in ("pause", "resume"):
        sub.add_parser(action, help=f"{action} a queue").add_argument("name")
    u = sub.add_parser("update", help="change a queue's limits")
    u.add_argument("name")
    u.add_argument(
        "--max-concurrency", type=count_int, metavar="N", help="attempts running at once"
    )
    u.add_argument(
        "--max-rate",
        type=rate,
        metavar="PER_SECOND",
        help="attempts started per second (0: no limit)",
    )


@command("queue", "pause, resume or limit a queue", _queue_arguments)
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


def _preview_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cron", nargs="?", help="cron expression (or use --every)")
    p.add_argument("--tz", metavar="ZONE", help="IANA time zone (default UTC)")
    p.add_argument("--every", metavar="DURATION", help="an interval instead of a cron")
    p.add_argument(
        "--count", type=positive_int, default=10, metavar="N", help="how many (default 10)"
    )
    p.add_argument("--after", metavar="TIME", help="start after this time (default now)")


@command("preview", "show the next fire times of a schedule", _preview_arguments)
def preview(c: Command) -> int:
    a = c.args
    if not a.cron and not a.every:
        raise UsageError("preview: give a cron expression or --every")
    given = {"cron": a.cron, "time_zone": a.tz, "every": duration(a.every)}
    times = c.client.preview_schedule(
        count=a.count, after=time(a.after), **{k: v for k, v in given.items() if v}
    )
    c.show(pb.PreviewScheduleResponse(fire_times=times), lambda: render.preview_table(times))
    return 0


EVENT_TYPES = [
    v.name.removeprefix("JOB_EVENT_TYPE_").lower()
    for v in job_pb2.JobEventType.DESCRIPTOR.values
    if v.number not in (job_pb2.JOB_EVENT_TYPE_UNSPECIFIED, job_pb2.JOB_EVENT_TYPE_SNAPSHOT)
]


def _subscription_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="subscription_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="POST job events to a URL (signed)")
    create.add_argument("url", help="the receiving URL")
    create.add_argument(
        "--event",
        dest="events",
        action="append",
        required=True,
        metavar="TYPE",
        help=f"an event type to deliver (repeatable, or comma-separated): {', '.join(EVENT_TYPES)}",
    )
    create.add_argument(
        "--secret",
        metavar="whsec_...",
        help="signing secret (default: a new one, printed once; the server never shows it)",
    )
    sub.add_parser("list", help="list subscriptions")
    sub.add_parser("delete", help="delete a subscription").add_argument("subscription_id")


@command("subscription", "create, list or delete event subscriptions", _subscription_arguments)
def subscription(c: Command) -> int:
    a = c.args
    if a.subscription_command == "list":
        subs = c.client.list_event_subscriptions()
        c.show(
            pb.ListEventSubscriptionsResponse(subscriptions=subs),
            lambda: render.subscriptions_table(subs),
        )
    elif a.subscription_command == "delete":
        c.client.delete_event_subscription(a.subscription_id)
        c.show(pb.DeleteEventSubscriptionResponse(), lambda: f"deleted {a.subscription_id}")
    else:
        types = [t for item in a.events for t in item.split(",") if t]
        unknown = [t for t in types if t.lower() not in EVENT_TYPES]
        if unknown:
            raise UsageError(
                f"unknown event type(s) {', '.join(unknown)}: one of {', '.join(EVENT_TYPES)}"
            )
        secret = a.secret or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        sub = c.client.create_event_subscription(a.url, types, secret)
        c.show(
            pb.CreateEventSubscriptionResponse(subscription=sub),
            lambda: (
                render.subscriptions_table([sub])
                + ("" if a.secret else f"\n\nsecret: {secret}  (keep it: it is not shown again)")
            ),
        )
    return 0
