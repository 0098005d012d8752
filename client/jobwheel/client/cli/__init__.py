"""The `jobwheel` command line (argparse over the sync client).

Shell completion (argcomplete): `eval "$(register-python-argcomplete jobwheel)"` in bash
or zsh.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import argcomplete
from jobwheel.client.cli import parser
from jobwheel.client.cli.base import Command, NoSuchJob, UsageError
from jobwheel.client.connection import Connection
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


def connection(args: argparse.Namespace) -> Connection:
    """The connection the flags describe (see parser.connection_arguments)."""
    try:
        return Connection.of(
            args.server,
            token=args.token,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def run(argv: Sequence[str] | None = None) -> int:
    """Parses and runs one command; returns the exit code."""
    tree = parser.build()
    argcomplete.autocomplete(tree)
    args: argparse.Namespace = tree.parse_args(argv)
    try:
        client = Client(connection(args))
    except (UsageError, OSError) as err:  # OSError: a --tls-* file cannot be read
        print(f"jobwheel: {err}", file=sys.stderr)
        return USAGE
    try:
        code: int = args.run(Command(args, client))
        return code
    except BrokenPipeError:
        # the reader went away (`| head`): not an error; keep the exit-time flush quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except UsageError as err:
        print(f"jobwheel: {err}", file=sys.stderr)  # our own text, lines as written
        return USAGE
    except NoSuchJob as err:
        print(f"jobwheel: {err}", file=sys.stderr)
        return NOT_FOUND
    # bad duration/time text, unreadable payload file, a number no message can hold
    except (ValueError, OSError, OverflowError, RecursionError) as err:
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
