"""The `jobwheel` command line (stdlib argparse over the sync client)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from jobwheel.client.channel import Credentials
from jobwheel.client.cli import commands, live, parser
from jobwheel.client.cli.commands import Command, UsageError
from jobwheel.client.errors import (
    FailedPrecondition,
    InvalidArgument,
    JobwheelError,
    NotFound,
    Unavailable,
    Unimplemented,
)
from jobwheel.client.sync import Client

OK, ERROR, USAGE, NOT_FOUND, PRECONDITION = 0, 1, 2, 3, 4

HANDLERS: dict[str, Callable[[Command], int]] = {
    "enqueue": commands.enqueue,
    "get": commands.get,
    "list": commands.list_jobs,
    "cancel": commands.manage,
    "retry": commands.manage,
    "pause": commands.manage,
    "resume": commands.manage,
    "delete": commands.manage,
    "reschedule": commands.reschedule,
    "trigger": commands.trigger,
    "history": commands.history,
    "stats": commands.stats,
    "queues": commands.queues,
    "queue": commands.queue,
    "preview": commands.preview,
    "wait": commands.wait,
    "watch": live.watch,
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe(err: JobwheelError, address: str) -> str:
    if isinstance(err, InvalidArgument) and err.violations:
        fields = "; ".join(f"{v.field}: {v.description}" for v in err.violations)
        return f"invalid argument: {fields}"
    if isinstance(err, Unimplemented):
        return f"the server at {address} does not support this command yet ({err.message})"
    if isinstance(err, Unavailable):
        return f"cannot reach the server at {address}: {err.message}"
    return str(err)


def exit_code(err: JobwheelError) -> int:
    if isinstance(err, InvalidArgument):
        return USAGE
    if isinstance(err, NotFound):
        return NOT_FOUND
    if isinstance(err, FailedPrecondition):
        return PRECONDITION
    return ERROR


def run(argv: Sequence[str] | None = None) -> int:
    """Parses and runs one command; returns the exit code."""
    args: argparse.Namespace = parser.build().parse_args(argv)
    client = Client(
        args.server,
        credentials=Credentials.from_env(args.token, args.tls_ca, args.tls_cert, args.tls_key),
    )
    try:
        return HANDLERS[args.command](Command(args, client))
    except BrokenPipeError:
        # the reader went away (`| head`): not an error; keep the exit-time flush quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except UsageError as err:
        print(f"jobwheel: {_one_line(str(err))}", file=sys.stderr)
        return USAGE
    except (ValueError, OSError) as err:  # bad duration/time text, unreadable payload file
        print(f"jobwheel: {_one_line(str(err))}", file=sys.stderr)
        return USAGE
    except JobwheelError as err:
        print(f"jobwheel: {_one_line(describe(err, client.address))}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def main() -> None:
    sys.exit(run())
