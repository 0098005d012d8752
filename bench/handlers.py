"""In-process handlers the benchmark servers load with `--handlers bench.handlers`."""

from __future__ import annotations

from typing import Any

from jobwheel.server import task

NOOP = "bench.noop"


@task(NOOP)
async def noop(payload: dict[str, Any]) -> None:
    return None
