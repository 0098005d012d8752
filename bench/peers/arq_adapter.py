"""arq on Redis: enqueue_job from 64 tasks, its Worker with its defaults (max_jobs 10, 0.5 s
poll) in this process. Runs in the peers' venv."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

from bench.peers.load import Firings, Tally, async_count, due_times
from bench.peers.spec import Adapter, Env, Result, Sizes


async def _pool(env: Env) -> Any:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(env.redis_url))
    await pool.flushdb()
    return pool


async def _work(env: Env, fn: Any, done: Any) -> Any:
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    worker = Worker(
        functions=[func(fn, name="noop")],
        redis_settings=RedisSettings.from_dsn(env.redis_url),
        handle_signals=False,
    )
    running = asyncio.create_task(worker.async_run())
    try:
        return await asyncio.to_thread(done)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # its jobs' tasks, cancelled with it
            await worker.close()


def w1(sizes: Sizes, env: Env) -> Result:
    async def go() -> float:
        pool = await _pool(env)
        rate = await async_count(
            lambda i: pool.enqueue_job("noop", i), sizes.enqueues, sizes.callers
        )
        await pool.aclose()
        return rate

    return {"rate": asyncio.run(go())}


def w3(sizes: Sizes, env: Env) -> Result:
    tally = Tally(sizes.drained)

    async def noop(ctx: Any, n: int) -> None:
        tally.start()
        tally.finish()

    async def go() -> float:
        pool = await _pool(env)
        for i in range(sizes.drained):
            await pool.enqueue_job("noop", i)
        await pool.aclose()
        return await _work(env, noop, lambda: tally.wait(900))  # type: ignore[no-any-return]

    return {"rate": asyncio.run(go())}


def w4(sizes: Sizes, env: Env) -> Result:
    fires = Firings(sizes.fires)

    async def noop(ctx: Any, at: float) -> None:
        fires.fired(at)

    async def go() -> Result:
        pool = await _pool(env)
        for at in due_times(sizes.fires, sizes.lead, sizes.span):
            when = dt.datetime.fromtimestamp(at, dt.UTC)
            await pool.enqueue_job("noop", at, _defer_until=when)
        await pool.aclose()
        return await _work(env, noop, lambda: fires.wait(sizes.lead + sizes.span + 10))  # type: ignore[no-any-return]

    return asyncio.run(go())


ADAPTERS = [Adapter("arq", "server", "peers", {"w1": w1, "w3": w3, "w4": w4}, "redis")]
