"""The huey side of the drain comparison: one no-op task on a SqliteHuey.

Loaded by `huey_consumer bench.huey_tasks.huey` and by a producer process calling enqueue(). The
consumer's signal handlers note the first start and the N-th completion (BENCH_HUEY_EXPECT)
and write both wall-clock times to BENCH_HUEY_DONE, so huey is timed first start -> last
completion like jobwheel.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from huey import SqliteHuey  # type: ignore[import-untyped]
from huey.signals import (  # type: ignore[import-untyped]
    SIGNAL_COMPLETE,
    SIGNAL_EXECUTING,
)

huey = SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_DB", "bench-huey.db"))
_expect = int(os.environ.get("BENCH_HUEY_EXPECT", "0"))
_done_path = os.environ.get("BENCH_HUEY_DONE", "")
_lock = threading.Lock()
_first_start: float | None = None
_completed = 0


@huey.task()  # type: ignore[untyped-decorator]
def noop(n: int) -> None:
    return None


def enqueue(n: int) -> float:
    """Enqueues n no-ops (one commit each, as huey does); returns tasks/s."""
    started = time.perf_counter()
    for i in range(n):
        noop(i)
    return n / (time.perf_counter() - started)


@huey.signal(SIGNAL_EXECUTING)  # type: ignore[untyped-decorator]
def _executing(signal: str, task: Any) -> None:
    global _first_start
    if _first_start is None:
        with _lock:
            if _first_start is None:
                _first_start = time.time()


@huey.signal(SIGNAL_COMPLETE)  # type: ignore[untyped-decorator]
def _complete(signal: str, task: Any) -> None:
    global _completed
    with _lock:
        _completed += 1
        if _completed != _expect or not _done_path:
            return
    tmp = Path(_done_path + ".tmp")
    tmp.write_text(json.dumps({"first_start": _first_start, "last_complete": time.time()}))
    tmp.replace(_done_path)
