"""The argparse tree of the `jobwheel` command, built from the command registry."""

from __future__ import annotations

import argparse
import difflib
import re
from importlib import metadata
from typing import NoReturn

from jobwheel.client.cli.base import REGISTRY, Spec
from jobwheel.client.connection import (
    DEFAULT_SERVER,
    ENV_SERVER,
    ENV_TLS_CA,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    ENV_TOKEN,
)

EXIT_CODES = """\
exit codes:
  0  success
  1  server or connection error (also: `wait` timed out)
  2  usage error, or the server rejected an argument (INVALID_ARGUMENT)
  3  not found (NOT_FOUND, or no job id starts with the prefix given)
  4  the job's state does not allow it (FAILED_PRECONDITION)
  5  `wait`: the job ended FAILED or CANCELLED
"""

DESCRIPTION = """\
Enqueue, inspect and manage the jobs of a jobwheel server.

Durations are like 90s, 5m, 2h, 1h30m or a number of seconds; times are ISO 8601
(2030-01-31T09:00:00Z; without an offset, local time). A job id may be shortened to
an unambiguous prefix. `-o json` prints the RPC's response as protobuf JSON with the
proto's field names (one document; `watch` prints one document per line)."""

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)$")


def version() -> str:
    try:
        return metadata.version("jobwheel")
    except metadata.PackageNotFoundError:
        return "unknown"


class Parser(argparse.ArgumentParser):
    """argparse that suggests the nearest command for a mistyped one."""

    def error(self, message: str) -> NoReturn:
        match = _INVALID_CHOICE.search(message)
        if match:
            choices = [c.strip().strip("'") for c in match.group(2).split(",")]
            close = difflib.get_close_matches(match.group(1), choices, n=1, cutoff=0.5)
            if close:
                message = f"invalid choice: {match.group(1)!r}; did you mean {close[0]!r}?"
        super().error(message)


def connection_arguments(p: argparse.ArgumentParser, suppress: bool) -> None:
    """How to reach the server: every flag of the connection is declared here."""
    p.add_argument(
        "--server",
        default=argparse.SUPPRESS if suppress else None,
        metavar="HOST[:PORT]",
        help=f"server address (default: ${ENV_SERVER} or {DEFAULT_SERVER}; port 50051 if omitted)",
    )
    for flag, env, metavar, what in (
        ("--token", ENV_TOKEN, "TOKEN", "bearer token"),
        ("--tls-ca", ENV_TLS_CA, "PEM", "CA certificate that signed the server's (uses TLS)"),
        ("--tls-cert", ENV_TLS_CERT, "PEM", "client certificate, for mutual TLS (uses TLS)"),
        ("--tls-key", ENV_TLS_KEY, "PEM", "the private key of --tls-cert"),
    ):
        p.add_argument(
            flag,
            default=argparse.SUPPRESS if suppress else None,
            metavar=metavar,
            help=f"{what} (default: ${env})",
        )


def _common(suppress: bool) -> argparse.ArgumentParser:
    """-o and the connection flags, accepted before and after the command. Subcommands use
    SUPPRESS defaults so they do not overwrite a value given before the command."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default=argparse.SUPPRESS if suppress else "table",
        help="output format (default: table)",
    )
    connection_arguments(p, suppress)
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


def build() -> Parser:
    from jobwheel.client.cli import admin, commands, live, wait  # noqa: F401 (they register)

    common = _common(suppress=True)
    filters = _filters()
    parser = Parser(
        prog="jobwheel",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"jobwheel {version()}")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for spec in REGISTRY.values():
        _add(sub, spec, common, filters)
    return parser


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    spec: Spec,
    common: argparse.ArgumentParser,
    filters: argparse.ArgumentParser,
) -> None:
    p = sub.add_parser(
        spec.name,
        help=spec.help,
        description=spec.help,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common, filters] if spec.filters else [common],
    )
    p.set_defaults(run=spec.run)
    if spec.arguments is not None:
        spec.arguments(p)
        # nested actions (queue pause, subscription list) take -o and --server too
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    child._add_container_actions(common)
