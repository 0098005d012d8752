"""Optional sampling of a server process with py-spy, summarised as flat hotspot lists."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampled(pid: int, out: Path | None, rate: int = 250) -> Iterator[None]:
    """Samples `pid` while the block runs and writes collapsed stacks to `out` (None: off)."""
    exe = py_spy() if out is not None else None
    if out is None or exe is None:
        if out is not None:
            print("  (py-spy not installed: no profile)", file=sys.stderr)
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking"]
    if not os.environ.get("JOBWHEEL_PROFILE_LINES"):
        argv += ["--function"]  # aggregate by function, not by line
    if os.environ.get("JOBWHEEL_PROFILE_GIL"):  # only samples that hold the GIL: CPU, not waits
        argv += ["--gil"]
    argv += ["--format", "raw", "--output", str(out)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def hotspots(collapsed: Path, top: int = 12) -> str:
    """Self time (leaf frame) and inclusive time per function, as shares of all samples."""
    if not collapsed.exists():
        return f"(no profile at {collapsed})"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "(no samples)"

    def listing(counter: Counter[str]) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]

    return "\n".join(
        [f"{total} samples; self time:", *listing(own), "inclusive time:", *listing(inclusive)]
    )


def _short(frame: str) -> str:
    """`fn (/long/path/site-packages/pkg/mod.py:12)` -> `fn (pkg/mod.py:12)`."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    where = where.rstrip(")")
    for marker in ("site-packages/", "/server/", "/client/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})"
