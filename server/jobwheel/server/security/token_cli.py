"""`jobwheel-server token create`: a new token, printed once, its hash appended to the file."""

from __future__ import annotations

import argparse
import fcntl
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from jobwheel.server.security.roles import Role, parse_role
from jobwheel.server.security.tokens import (
    NAME,
    QUEUE,
    TokensFileError,
    entry_text,
    new_token,
    parse,
)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="jobwheel-server token")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser(
        "create", help="print a new token once and append its SHA-256 hash to the tokens file"
    )
    create.add_argument("--name", required=True, help="the principal the token names")
    create.add_argument(
        "--role", required=True, choices=[r.value for r in Role], help="what it may call"
    )
    create.add_argument(
        "--queues",
        action="append",
        default=None,
        metavar="QUEUE",
        help="limit it to these queues (repeatable or comma-separated; default every queue)",
    )
    create.add_argument(
        "--file",
        default=os.environ.get("JOBWHEEL_AUTH_TOKENS"),
        help="the tokens file (default $JOBWHEEL_AUTH_TOKENS); created if missing",
    )
    args = parser.parse_args(argv)
    if not args.file:
        parser.error("--file (or JOBWHEEL_AUTH_TOKENS) is required")
    queues = [q.strip() for item in args.queues or () for q in item.split(",") if q.strip()]
    bad = [q for q in queues if not QUEUE.fullmatch(q)]
    if bad:
        parser.error(f"invalid queue names: {', '.join(bad)}")
    if not NAME.fullmatch(args.name):
        parser.error("--name must be 1-128 of letters, digits, _.:@-")
    path = Path(args.file)
    token = new_token()
    text = entry_text(args.name, parse_role(args.role), queues, token)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        print(f"jobwheel-server token: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    with os.fdopen(fd, "rb+") as file:
        # one `token create` at a time: two appending together could both add a name
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            existing = file.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"jobwheel-server token: {path}: {exc}", file=sys.stderr)
            return 2
        try:
            parse(existing + text, str(path))  # refuse to write a file the server would refuse
        except TokensFileError as exc:
            print(f"jobwheel-server token: {exc}", file=sys.stderr)
            return 2
        file.write(text.encode())
        if os.fstat(fd).st_mode & 0o044:
            print(
                f"jobwheel-server token: warning: others than its owner may read {path}"
                f" (chmod 600 {shlex.quote(str(path))})",
                file=sys.stderr,
            )
    print(token)
    print(
        f"added token {args.name!r} ({args.role}) to {path}; it is not shown again", file=sys.stderr
    )
    return 0
