"""`jobwheel-server token create`: a new token, printed once, its hash appended to the file."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jobwheel.server.security.roles import Role, parse_role
from jobwheel.server.security.tokens import QUEUE, TokensFileError, entry_text, new_token, parse


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
    path = Path(args.file)
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    token = new_token()
    text = entry_text(args.name, parse_role(args.role), queues, token)
    try:
        parse(existing + text, str(path))  # refuse to write a file the server would refuse
    except TokensFileError as exc:
        print(f"jobwheel-server token: {exc}", file=sys.stderr)
        return 2
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(text)
    print(token)
    print(
        f"added token {args.name!r} ({args.role}) to {path}; it is not shown again", file=sys.stderr
    )
    return 0
