"""procrastinate on PostgreSQL (psycopg 3): defer_async from 64 tasks, batch_defer_async of
1,000, its worker with its defaults (concurrency 1) in this process. Runs in the peers' venv."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

from bench.peers.load import Firings, Tally, async_count, due_times
from bench.peers.spec import Adapter, Env, Result, Sizes


def _app(env: Env, pool: int = 10) -> Any:
    import procrastinate

    conn = procrastinate.PsycopgConnector(conninfo=env.postgres_url, min_size=pool, max_size=pool)
    return procrastinate.App(connector=conn)


async def _opened(app: Any) -> None:
    await app.schema_manager.apply_schema_async()


async def _work(app: Any, wait: Any) -> Any:
    running = asyncio.create_task(app.run_worker_async(install_signal_handlers=False))
    try:
        return await asyncio.to_thread(wait)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(running, 30)


def w1(sizes: Sizes, env: Env) -> Result:
    app = _app(env, pool=sizes.connections)
    noop = app.task(name="noop")(lambda n: None)

    async def go() -> float:
        async with app.open_async():
            await _opened(app)
            return await async_count(lambda i: noop.defer_async(n=i), sizes.enqueues, sizes.callers)

    return {"rate": asyncio.run(go())}


def w2(sizes: Sizes, env: Env) -> Result:
    app = _app(env)
    noop = app.task(name="noop")(lambda n: None)

    async def go() -> float:
        async with app.open_async():
            await _opened(app)
            started = time.perf_counter()
            for k in range(0, sizes.batched, sizes.batch):
                await noop.batch_defer_async(*({"n": k + i} for i in range(sizes.batch)))
            return sizes.batched / (time.perf_counter() - started)

    return {"rate": asyncio.run(go())}


def w3(sizes: Sizes, env: Env) -> Result:
    app = _app(env)
    tally = Tally(sizes.drained)

    @app.task(name="noop")  # type: ignore[misc]
    def noop(n: int) -> None:
        tally.start()
        tally.finish()

    async def go() -> float:
        async with app.open_async():
            await _opened(app)
            for k in range(0, sizes.drained, 1000):
                m = min(1000, sizes.drained - k)
                await noop.batch_defer_async(*({"n": k + i} for i in range(m)))
            return await _work(app, lambda: tally.wait(900))  # type: ignore[no-any-return]

    return {"rate": asyncio.run(go())}


def w4(sizes: Sizes, env: Env) -> Result:
    app = _app(env)
    fires = Firings(sizes.fires)

    @app.task(name="due")  # type: ignore[misc]
    def due(at: float) -> None:
        fires.fired(at)

    async def go() -> Result:
        async with app.open_async():
            await _opened(app)
            for at in due_times(sizes.fires, sizes.lead, sizes.span):
                when = dt.datetime.fromtimestamp(at, dt.UTC)
                await due.configure(schedule_at=when).defer_async(at=at)
            return await _work(app, lambda: fires.wait(sizes.lead + sizes.span + 10))  # type: ignore[no-any-return]

    return asyncio.run(go())


ADAPTERS = [
    Adapter(
        "procrastinate", "postgres", "peers", {"w1": w1, "w2": w2, "w3": w3, "w4": w4}, "postgres"
    )
]
