"""Writes client/jobwheel/client/sync.py from aio.py: the blocking client is the asyncio
client with the awaits taken out, so the two cannot drift apart.

`make gen` runs it; tests/unit/test_client_parity.py fails when sync.py is not what it writes.
The rules are plain text substitutions over aio.py (the approach of unasync), then ruff format.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "client/jobwheel/client/aio.py"
TARGET = ROOT / "client/jobwheel/client/sync.py"

HEADER = "# Generated from aio.py by tools/gen_sync_client.py (make gen): edit aio.py instead.\n"
DOCSTRING = '''"""The blocking client (grpc): one method per JobService RPC; `AsyncClient` has
the same methods, awaitable."""'''

RULES: list[tuple[str, str]] = [
    (r"\bjobwheel\.client\.coalescing import\b", "jobwheel.client.coalescing_threads import"),
    (r"^import asyncio\n", ""),
    (r"\baclosing\b", "closing"),
    (
        r"AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence",
        "Callable, Generator, Iterable, Iterator, Sequence",
    ),
    (r"\bAsyncGenerator\[(.+?), None\]", r"Generator[\1, None, None]"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAwaitable\[None\]", "None"),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\bgrpc\.aio\.AioRpcError\b", "grpc.RpcError"),
    (r"\bgrpc\.aio\.Channel\b", "grpc.Channel"),
    (r"\.aio_channel\(\)", ".channel()"),
    (
        r"Use as an async context manager, or await `close\(\)`",
        "Use as a context manager, or call `close()`",
    ),
    (r"\basync def __aenter__\b", "def __enter__"),
    (r"\basync def __aexit__\b", "def __exit__"),
    (r"\basync (def|for|with)\b", r"\1"),
    (r"\bawait ", ""),
    (r"  # noqa: ASYNC109\b.*$", ""),  # a deadline parameter is only a lint finding in aio
    # a call cut short by the channel's close: grpc's blocking calls raise an RpcError there
    (r"^\s+except asyncio\.CancelledError as err:\n\s+raise cut_short\(err\) from None\n", ""),
    (r"\bcut_short, ", ""),
    (r"\bAsyncClient\b", "Client"),
    (r"^(\s+)for (\w+) in ([\w.]+):\n\s+yield \2\n", r"\1yield from \3\n"),
    (r'\A""".*?"""', DOCSTRING),  # last: the docstring names AsyncClient
]


def transform(source: str) -> str:
    out = source
    for pattern, replacement in RULES:
        out = re.sub(pattern, replacement, out, flags=re.M | re.S * pattern.startswith(r"\A"))
    return HEADER + out


def ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        raise SystemExit("ruff is needed to format the generated client (pip install -e '.[dev]')")
    return found


def generate() -> str:
    """The text sync.py should have."""
    formatted = subprocess.run(
        [ruff(), "format", "--stdin-filename", str(TARGET), "-"],
        input=transform(SOURCE.read_text()),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return formatted.stdout


def main() -> None:
    TARGET.write_text(generate())


if __name__ == "__main__":
    main()
