"""Settings from command-line flags and JOBWHEEL_* environment variables (flags win)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DB = "sqlite:///jobwheel.db"


@dataclass(frozen=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    db: str = DEFAULT_DB
    handlers: tuple[str, ...] = ()
    max_payload_bytes: int = 1 << 20
    sqlite_synchronous: str = "FULL"
    grace_period: float = 10.0
    queue_concurrency: int = 256
    threads: int = 32
    watch_heartbeat: float = 15.0
    watch_buffer: int = 10_000
    event_retention: float = 86_400.0
    recover_interval: float = 5.0
    retention: float = 7 * 86_400.0
    idempotency_window: float = 86_400.0
    misfire_grace: float = 5.0
    webhook_secrets: tuple[str, ...] = ()
    webhook_allow: tuple[str, ...] = ()
    log_level: str = "INFO"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _listed(flags: list[str] | None, env_value: str) -> tuple[str, ...]:
    """Repeated flags win over the comma-separated environment variable."""
    if flags is None:
        return tuple(_split(env_value))
    return tuple(item for flag in flags for item in _split(flag))


def parse_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="jobwheel-server",
        description="Run the jobwheel gRPC job-scheduling server.",
        epilog="Every flag can also be set by its JOBWHEEL_* environment variable.",
    )
    parser.add_argument(
        "--listen",
        default=env.get("JOBWHEEL_LISTEN", DEFAULT_LISTEN),
        help=f"HOST:PORT to serve gRPC on (JOBWHEEL_LISTEN, default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--db",
        default=env.get("JOBWHEEL_DB", DEFAULT_DB),
        help="database URL: sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
        f"(JOBWHEEL_DB, default {DEFAULT_DB})",
    )
    parser.add_argument(
        "--handlers",
        action="append",
        default=None,
        metavar="MODULE",
        help="import MODULE to register its @task handlers; repeatable "
        "(JOBWHEEL_HANDLERS, comma-separated)",
    )
    parser.add_argument(
        "--max-payload-bytes",
        type=int,
        default=int(env.get("JOBWHEEL_MAX_PAYLOAD_BYTES", 1 << 20)),
        help="largest accepted payload, encoded (JOBWHEEL_MAX_PAYLOAD_BYTES, default and "
        "most 1 MiB)",
    )
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL", "OFF"],
        default=env.get("JOBWHEEL_SQLITE_SYNCHRONOUS", "FULL").upper(),
        help="SQLite synchronous pragma (JOBWHEEL_SQLITE_SYNCHRONOUS, default FULL)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=float(env.get("JOBWHEEL_GRACE_PERIOD", 10.0)),
        help="seconds in-flight calls get to finish on shutdown (JOBWHEEL_GRACE_PERIOD)",
    )
    parser.add_argument(
        "--queue-concurrency",
        type=int,
        default=int(env.get("JOBWHEEL_QUEUE_CONCURRENCY", 256)),
        help="attempts one process runs at once per queue (JOBWHEEL_QUEUE_CONCURRENCY)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(env.get("JOBWHEEL_THREADS", 32)),
        help="threads that run plain (non-async) handlers; time waiting for one counts "
        "toward a job's timeout (JOBWHEEL_THREADS, default 32)",
    )
    parser.add_argument(
        "--watch-heartbeat",
        type=float,
        default=float(env.get("JOBWHEEL_WATCH_HEARTBEAT", 15.0)),
        help="seconds between heartbeats on an idle WatchJobs stream (JOBWHEEL_WATCH_HEARTBEAT)",
    )
    parser.add_argument(
        "--watch-buffer",
        type=int,
        default=int(env.get("JOBWHEEL_WATCH_BUFFER", 10_000)),
        help="events a WatchJobs stream may fall behind before it is ended with "
        "RESOURCE_EXHAUSTED (JOBWHEEL_WATCH_BUFFER)",
    )
    parser.add_argument(
        "--event-retention",
        type=float,
        default=float(env.get("JOBWHEEL_EVENT_RETENTION", 86_400.0)),
        help="seconds the event log keeps changes for WatchJobs resumption "
        "(JOBWHEEL_EVENT_RETENTION, default one day)",
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=float(env.get("JOBWHEEL_RETENTION", 7 * 86_400.0)),
        help="seconds finished jobs (completed, failed, cancelled) are kept, with their "
        "attempts; 0 keeps them forever (JOBWHEEL_RETENTION, default 7 days)",
    )
    parser.add_argument(
        "--idempotency-window",
        type=float,
        default=float(env.get("JOBWHEEL_IDEMPOTENCY_WINDOW", 86_400.0)),
        help="seconds an idempotency key maps to its job; a repeat after that creates a new "
        "job; 0 means forever (JOBWHEEL_IDEMPOTENCY_WINDOW, default 1 day)",
    )
    parser.add_argument(
        "--recover-interval",
        type=float,
        default=float(env.get("JOBWHEEL_RECOVER_INTERVAL", 5.0)),
        help="seconds between checks for expired leases, whose jobs then run again "
        "(JOBWHEEL_RECOVER_INTERVAL, default 5)",
    )
    parser.add_argument(
        "--misfire-grace",
        type=float,
        default=float(env.get("JOBWHEEL_MISFIRE_GRACE", 5.0)),
        help="seconds a recurring job may be late before its misfire policy applies "
        "(JOBWHEEL_MISFIRE_GRACE, default 5)",
    )
    parser.add_argument(
        "--webhook-secret",
        action="append",
        default=None,
        metavar="whsec_...",
        help="secret that signs HTTP job requests (Standard Webhooks); repeat to rotate "
        "(JOBWHEEL_WEBHOOK_SECRETS, comma-separated)",
    )
    parser.add_argument(
        "--webhook-allow",
        action="append",
        default=None,
        metavar="CIDR",
        help="network HTTP jobs may reach besides public addresses, e.g. 10.0.0.0/8; "
        "repeatable (JOBWHEEL_WEBHOOK_ALLOW, comma-separated)",
    )
    parser.add_argument(
        "--log-level",
        default=env.get("JOBWHEEL_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (JOBWHEEL_LOG_LEVEL, default INFO)",
    )
    args = parser.parse_args(argv)
    handlers = args.handlers
    if handlers is None:
        handlers = _split(env.get("JOBWHEEL_HANDLERS", ""))
    else:
        handlers = [h for item in handlers for h in _split(item)]
    if args.threads <= 0:
        parser.error("--threads must be positive")
    if args.queue_concurrency <= 0:
        parser.error("--queue-concurrency must be positive")
    if not 0 < args.max_payload_bytes <= 1 << 20:
        # at most 1 MiB: a job with payload, result and progress must fit one 4 MiB reply
        parser.error("--max-payload-bytes must be between 1 and 1048576")
    return Settings(
        listen=args.listen,
        db=args.db,
        handlers=tuple(handlers),
        max_payload_bytes=args.max_payload_bytes,
        sqlite_synchronous=args.sqlite_synchronous,
        grace_period=args.grace_period,
        queue_concurrency=args.queue_concurrency,
        threads=args.threads,
        watch_heartbeat=args.watch_heartbeat,
        watch_buffer=args.watch_buffer,
        event_retention=args.event_retention,
        recover_interval=args.recover_interval,
        retention=args.retention,
        idempotency_window=args.idempotency_window,
        misfire_grace=args.misfire_grace,
        webhook_secrets=_listed(args.webhook_secret, env.get("JOBWHEEL_WEBHOOK_SECRETS", "")),
        webhook_allow=_listed(args.webhook_allow, env.get("JOBWHEEL_WEBHOOK_ALLOW", "")),
        log_level=args.log_level.upper(),
    )
