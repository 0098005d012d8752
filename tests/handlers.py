"""Task handlers of the tests; server subprocesses load them with --handlers tests.handlers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from jobwheel.server import task
from jobwheel.server.execution.inprocess import TaskContext

RECORDED: list[Any] = []


@task("test.echo")
async def echo(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    return {"echo": payload, "attempt": ctx.attempt}


@task("test.noop")
async def noop(payload: dict[str, Any]) -> None:
    return None


@task("test.boom")
async def boom(payload: dict[str, Any]) -> None:
    raise ValueError("boom")


@task("test.hang")
async def hang(payload: dict[str, Any]) -> None:
    await asyncio.sleep(3600)


@task("test.block")
def block(payload: dict[str, Any], ctx: TaskContext) -> str:
    time.sleep(payload.get("seconds", 0.2))
    return "slept"


# gates of test.gate, by name: an in-process test opens one (`open_gate`) to end the runs
GATES: dict[str, asyncio.Event] = {}


@task("test.gate")
async def gate(payload: dict[str, Any]) -> str:
    """Runs until the test opens the gate named `payload["gate"]` (no wall-clock wait)."""
    await GATES.setdefault(payload["gate"], asyncio.Event()).wait()
    return "opened"


def open_gate(name: str) -> None:
    GATES.setdefault(name, asyncio.Event()).set()


# test.overlap: how many of its runs are in progress at once, by queue, and the most seen
OVERLAP_NOW: dict[str, int] = {}
OVERLAP_MOST: dict[str, int] = {}


@task("test.overlap")
async def overlap(payload: dict[str, Any], ctx: TaskContext) -> None:
    queue = ctx.queue
    OVERLAP_NOW[queue] = OVERLAP_NOW.get(queue, 0) + 1
    OVERLAP_MOST[queue] = max(OVERLAP_MOST.get(queue, 0), OVERLAP_NOW[queue])
    try:
        await asyncio.sleep(payload.get("ms", 0) / 1000)
    finally:
        OVERLAP_NOW[queue] -= 1


@task("test.record")
async def record(payload: dict[str, Any]) -> None:
    RECORDED.append(payload["n"])


@task("test.flaky")
async def flaky(payload: dict[str, Any], ctx: TaskContext) -> int:
    if ctx.attempt < payload["succeed_on"]:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return ctx.attempt


@task("test.wait_release")
async def wait_release(payload: dict[str, Any]) -> str:
    release = Path(payload["release"])
    # another process creates the file: polling it is the point
    while not release.exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
    return "released"


@task("test.not_json")
async def not_json(payload: dict[str, Any]) -> object:
    """A result that cannot be stored: `payload["kind"]` says which (an object by default)."""
    kind = payload.get("kind", "object")
    if kind == "nan":
        return {"x": float("nan")}
    if kind in ("deep", "deeper_than_python"):  # 21 levels; or past the interpreter's limit
        deep: Any = []
        for _ in range(21 if kind == "deep" else 100_000):
            deep = [deep]
        return deep
    if kind == "nul":
        return {"k\x00": 1}
    return object()


@task("test.nul_error")
async def nul_error(payload: dict[str, Any]) -> None:
    raise ValueError("before\x00after")


@task("test.deep_boom")
def deep_boom(payload: dict[str, Any]) -> None:
    """Raises from `depth` nested calls, in the thread pool, with a `size`-character message."""

    def down(level: int) -> None:
        if level <= 0:
            raise KeyError("x" * payload.get("size", 10))
        down(level - 1)

    if not payload.get("wrap", True):
        down(payload.get("depth", 3))
    try:
        down(payload.get("depth", 3))
    except KeyError as exc:
        raise RuntimeError("wrapped") from exc


@task("test.big_result")
async def big_result(payload: dict[str, Any]) -> str:
    return "x" * int(payload["n"])


@task("test.wait_then_fail")
async def wait_then_fail(payload: dict[str, Any], ctx: TaskContext) -> None:
    release = Path(payload["release"])
    while not release.exists():  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
    raise RuntimeError(f"attempt {ctx.attempt} fails")


@task("test.own_timeout")
async def own_timeout(payload: dict[str, Any]) -> None:
    raise TimeoutError("the upstream call timed out")
