"""Settings from command-line flags and JOBWHEEL_* environment variables (flags win).

Every value is checked here, whether it came from a flag or the environment: a bad one ends
the process with one line on stderr (exit code 2) before anything starts.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any, NoReturn

from jobwheel.server.execution.signing import secret_problem
from jobwheel.server.observability.logs import FORMATS as LOG_FORMATS
from jobwheel.server.security import settings as security
from jobwheel.server.storage.dialect import SQLITE, StorageUrlError, lock_file_of, parse_url

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DB = "sqlite:///jobwheel.db"
# Docker sends SIGKILL 10 s after SIGTERM: the grace period plus releasing what still runs
# must fit well inside that.
DEFAULT_GRACE = 5.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SYNCHRONOUS = ("FULL", "NORMAL", "OFF")
# the event loop the server runs on: uvloop where it is installed (the server extra brings it
# on Linux and macOS), else asyncio's own
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
DAY = 86_400.0
YEAR = 365 * DAY


@dataclass(frozen=True)
class Settings:
    listen: str = DEFAULT_LISTEN
    db: str = DEFAULT_DB
    handlers: tuple[str, ...] = ()
    max_payload_bytes: int = 1 << 20
    sqlite_synchronous: str = SYNCHRONOUS[0]
    grace_period: float = DEFAULT_GRACE
    queue_concurrency: int = 256
    threads: int = 32
    watch_heartbeat: float = 15.0
    watch_buffer: int = 10_000
    event_retention: float = DAY
    recover_interval: float = 5.0
    retention: float = 7 * DAY
    idempotency_window: float = DAY
    misfire_grace: float = 5.0
    webhook_secrets: tuple[str, ...] = ()
    webhook_allow: tuple[str, ...] = ()
    log_level: str = "INFO"
    log_format: str = "text"
    event_loop: str = EVENT_LOOPS[0]
    metrics_listen: str = ""
    http_listen: str = ""  # the web dashboard's HOST:PORT; empty: no dashboard
    security: security.SecuritySettings = field(default_factory=security.SecuritySettings)


@dataclass(frozen=True)
class Number:
    """A numeric flag: its range, and whether 0 is allowed below `low` with a meaning."""

    flag: str
    env: str
    kind: type[int] | type[float]
    default: float
    low: float
    high: float
    help: str
    zero: str = ""  # what 0 means, when 0 is allowed below `low`

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def describe(self) -> str:
        low, high = _num(self.low), _num(self.high)
        zero = f", or 0: {self.zero}" if self.zero else ""
        return f"{low} to {high}{zero}"

    def parse(self, text: str) -> float:
        try:
            value: float = self.kind(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (
            self.low <= value <= self.high or (bool(self.zero) and value == 0)
        )
        if not ok:
            noun = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(
                f"must be {noun} from {self.describe()} (flag or {self.env}), got {text!r}"
            )
        return value


# The defaults of the numeric flags are Settings' own.
_DEFAULTS = Settings()

NUMBERS = (
    Number(
        "--max-payload-bytes",
        "JOBWHEEL_MAX_PAYLOAD_BYTES",
        int,
        _DEFAULTS.max_payload_bytes,
        1024,
        # at most 1 MiB: a job with payload, result and progress at the limit fits one 4 MiB reply
        1 << 20,
        "largest accepted payload, encoded, in bytes",
    ),
    Number(
        "--grace-period",
        "JOBWHEEL_GRACE_PERIOD",
        float,
        _DEFAULTS.grace_period,
        0,
        3600,
        "seconds in-flight calls and running attempts get to finish on SIGTERM/SIGINT; "
        "attempts still running then are released without using up a retry",
    ),
    Number(
        "--queue-concurrency",
        "JOBWHEEL_QUEUE_CONCURRENCY",
        int,
        _DEFAULTS.queue_concurrency,
        1,
        100_000,
        "attempts one process runs at once per queue",
    ),
    Number(
        "--threads",
        "JOBWHEEL_THREADS",
        int,
        _DEFAULTS.threads,
        1,
        1024,
        "threads that run plain (non-async) handlers; a job's timeout starts when its "
        "handler does, not while it waits for one",
    ),
    Number(
        "--watch-heartbeat",
        "JOBWHEEL_WATCH_HEARTBEAT",
        float,
        _DEFAULTS.watch_heartbeat,
        1,
        3600,
        "seconds between heartbeats on an idle WatchJobs stream",
    ),
    Number(
        "--watch-buffer",
        "JOBWHEEL_WATCH_BUFFER",
        int,
        _DEFAULTS.watch_buffer,
        100,
        10_000_000,
        "events a WatchJobs stream may fall behind before it is ended with RESOURCE_EXHAUSTED",
    ),
    Number(
        "--event-retention",
        "JOBWHEEL_EVENT_RETENTION",
        float,
        _DEFAULTS.event_retention,
        60,
        10 * YEAR,
        "seconds the event log keeps changes for WatchJobs resumption",
    ),
    Number(
        "--retention",
        "JOBWHEEL_RETENTION",
        float,
        _DEFAULTS.retention,
        60,
        100 * YEAR,
        "seconds finished jobs (completed, failed, cancelled) are kept, with their attempts",
        zero="keep them forever",
    ),
    Number(
        "--idempotency-window",
        "JOBWHEEL_IDEMPOTENCY_WINDOW",
        float,
        _DEFAULTS.idempotency_window,
        1,
        100 * YEAR,
        "seconds an idempotency key maps to its job; a repeat after that creates a new job",
        zero="forever",
    ),
    Number(
        # at most a third of the 30 s lease: leases are renewed on this beat
        "--recover-interval",
        "JOBWHEEL_RECOVER_INTERVAL",
        float,
        _DEFAULTS.recover_interval,
        0.1,
        10,
        "seconds between checks for expired leases (whose jobs then run again) and lease renewals",
    ),
    Number(
        "--misfire-grace",
        "JOBWHEEL_MISFIRE_GRACE",
        float,
        _DEFAULTS.misfire_grace,
        0,
        30 * DAY,
        "seconds a recurring job may be late before its misfire policy applies",
    ),
)


def _num(value: float) -> str:
    return f"{value:g}" if value < 1e6 else f"{value:.0f}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, not the whole usage: the mistake is the thing to read
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _listed(flags: list[str] | None, env_value: str) -> tuple[str, ...]:
    """Repeated flags win over the comma-separated environment variable."""
    if flags is None:
        return tuple(_split(env_value))
    return tuple(item for flag in flags for item in _split(flag))


def _address(env: str, *, optional: bool = False) -> Callable[[str], str]:
    """HOST:PORT with PORT 0..65535 (0 picks a free port); IPv6 hosts in brackets; empty
    when `optional` (the thing is off)."""

    def parse(text: str) -> str:
        if optional and not text:
            return text
        host, sep, port = text.rpartition(":")
        bracketed = host.startswith("[") == host.endswith("]")
        if not sep or not host or not bracketed or not port.isdigit() or int(port) > 65535:
            raise argparse.ArgumentTypeError(
                f"expected HOST:PORT with a port from 0 to 65535 (flag or {env}), got {text!r}"
            )
        return text

    return parse


check_listen = _address("JOBWHEEL_LISTEN")


def check_db(text: str) -> str:
    """A database URL the server can serve from (dialect.parse_url's checks), not an
    in-memory SQLite database: each connection the server opens would get one of its own."""
    try:
        parsed = parse_url(text)
    except StorageUrlError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (flag or JOBWHEEL_DB)") from None
    if parsed.dialect is SQLITE and lock_file_of(parsed.url) is None:
        raise argparse.ArgumentTypeError(
            "an in-memory SQLite database cannot be served (each connection would see one of "
            "its own): name a file, e.g. sqlite:///jobwheel.db (flag or JOBWHEEL_DB)"
        )
    return text


def _choice(env: str, allowed: Sequence[str], *, upper: bool = True) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.upper() if upper else text.lower()
        if value not in allowed:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(allowed)} (flag or {env}), got {text!r}"
            )
        return value

    return parse


def _check_lists(parser: _Parser, secrets: Sequence[str], allow: Sequence[str]) -> None:
    for index, secret in enumerate(secrets, 1):
        problem = secret_problem(secret)
        if problem:  # the secret itself stays out of the message: it would reach logs
            parser.error(f"--webhook-secret #{index} (or JOBWHEEL_WEBHOOK_SECRETS): {problem}")
    for cidr in allow:
        try:
            ip_network(cidr)
        except ValueError as exc:
            parser.error(f"--webhook-allow (or JOBWHEEL_WEBHOOK_ALLOW): {exc}")


def _add_choice(
    parser: argparse.ArgumentParser,
    env: Mapping[str, str],
    flag: str,
    allowed: Sequence[str],
    text: str,
    *,
    upper: bool = True,
) -> None:
    """A flag taking one of `allowed` (or its JOBWHEEL_* variable), defaulting to Settings'
    field of its name; `text` is its help, which gets the variable and default appended."""
    dest = flag.removeprefix("--").replace("-", "_")
    variable = f"JOBWHEEL_{dest.upper()}"
    default = getattr(_DEFAULTS, dest)
    parser.add_argument(
        flag,
        type=_choice(variable, allowed, upper=upper),
        default=env.get(variable, default),
        help=f"{text} ({variable}, default {default})",
    )


def parse_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if env is None else env
    parser = _Parser(
        prog="jobwheel-server",
        description="Run the jobwheel gRPC job-scheduling server.",
        epilog="Every flag can also be set by its JOBWHEEL_* environment variable.",
    )
    # string defaults go through `type` too, so environment values are checked like flags
    parser.add_argument(
        "--listen",
        type=check_listen,
        default=env.get("JOBWHEEL_LISTEN", _DEFAULTS.listen),
        help=f"HOST:PORT to serve gRPC on, port 0 picks a free one "
        f"(JOBWHEEL_LISTEN, default {_DEFAULTS.listen})",
    )
    parser.add_argument(
        "--http-listen",
        type=_address("JOBWHEEL_HTTP_LISTEN", optional=True),
        default=env.get("JOBWHEEL_HTTP_LISTEN", ""),
        metavar="HOST:PORT",
        help="HOST:PORT to serve the web dashboard on, e.g. 127.0.0.1:8080 "
        "(JOBWHEEL_HTTP_LISTEN, default: no dashboard)",
    )
    parser.add_argument(
        "--db",
        type=check_db,
        default=env.get("JOBWHEEL_DB", _DEFAULTS.db),
        help="database URL: sqlite:///FILE or postgresql://USER@HOST:PORT/DB (PostgreSQL 12+), "
        "which takes libpq's sslmode, sslrootcert, sslcert, sslkey, application_name, "
        f"connect_timeout, options and keepalive parameters (JOBWHEEL_DB, default {_DEFAULTS.db})",
    )
    parser.add_argument(
        "--handlers",
        action="append",
        default=None,
        metavar="MODULE",
        help="import MODULE to register its @task handlers; repeatable "
        "(JOBWHEEL_HANDLERS, comma-separated)",
    )
    choice = functools.partial(_add_choice, parser, env)
    choice("--sqlite-synchronous", SYNCHRONOUS, "SQLite synchronous pragma: FULL, NORMAL or OFF")
    for n in NUMBERS:
        parser.add_argument(
            n.flag,
            type=n.parse,
            default=env.get(n.env, str(n.default)),
            metavar="N" if n.kind is int else "S",
            help=f"{n.help} ({n.env}, default {_num(n.default)}; {n.describe()})",
        )
    parser.add_argument(
        "--webhook-secret",
        action="append",
        default=None,
        metavar="whsec_...",
        help="secret that signs HTTP job requests (Standard Webhooks: whsec_ and 24 to 64 "
        "bytes in base64); repeat to rotate (JOBWHEEL_WEBHOOK_SECRETS, comma-separated)",
    )
    parser.add_argument(
        "--webhook-allow",
        action="append",
        default=None,
        metavar="CIDR",
        help="network HTTP jobs may reach besides public addresses, e.g. 10.0.0.0/8; "
        "repeatable (JOBWHEEL_WEBHOOK_ALLOW, comma-separated)",
    )
    choice("--log-level", LOG_LEVELS, "DEBUG, INFO, WARNING or ERROR")
    choice(
        "--log-format",
        LOG_FORMATS,
        "text lines, or one JSON object per line with the job's fields",
        upper=False,
    )
    choice(
        "--event-loop",
        EVENT_LOOPS,
        "uvloop, asyncio's own loop, or auto: uvloop where it is installed",
        upper=False,
    )
    parser.add_argument(
        "--metrics-listen",
        type=_address("JOBWHEEL_METRICS_LISTEN", optional=True),
        default=env.get("JOBWHEEL_METRICS_LISTEN", _DEFAULTS.metrics_listen),
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics; off unless set "
        "(JOBWHEEL_METRICS_LISTEN)",
    )
    security.add_arguments(parser, env)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    args = parser.parse_args(argv)
    handlers = args.handlers
    if handlers is None:
        handlers = _split(env.get("JOBWHEEL_HANDLERS", ""))
    else:
        handlers = [h for item in handlers for h in _split(item)]
    secrets = _listed(args.webhook_secret, env.get("JOBWHEEL_WEBHOOK_SECRETS", ""))
    allow = _listed(args.webhook_allow, env.get("JOBWHEEL_WEBHOOK_ALLOW", ""))
    _check_lists(parser, secrets, allow)
    security_settings = security.from_arguments(args, parser)
    numbers: dict[str, Any] = {n.dest: getattr(args, n.dest) for n in NUMBERS}
    return Settings(
        listen=args.listen,
        db=args.db,
        handlers=tuple(handlers),
        sqlite_synchronous=args.sqlite_synchronous,
        webhook_secrets=secrets,
        webhook_allow=allow,
        log_level=args.log_level,
        log_format=args.log_format,
        event_loop=args.event_loop,
        metrics_listen=args.metrics_listen,
        http_listen=args.http_listen,
        **numbers,
        security=security_settings,
    )


def version() -> str:
    """The installed jobwheel version."""
    try:
        return importlib.metadata.version("jobwheel")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
