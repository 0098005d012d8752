"""pgqueuer on PostgreSQL (asyncpg): enqueue from 64 tasks over a pool, list enqueues of
1,000, its QueueManager with its defaults (batch 10, unlimited concurrency) in this process.
Runs in the peers' venv."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from bench.peers.load import Firings, Tally, async_count, due_times
from bench.peers.spec import Adapter, Env, Result, Sizes


async def _queries(env: Env, pool_size: int = 1) -> tuple[Any, Any]:
    import asyncpg
    from pgqueuer import Queries

    pool = await asyncpg.create_pool(env.postgres_url, min_size=pool_size, max_size=pool_size)
    queries = Queries.from_asyncpg_pool(pool)
    await queries.install()
    return pool, queries


async def _work(env: Env, fn: Any, wait: Any) -> Any:
    import asyncpg
    from pgqueuer import Queries, QueueManager

    conn = await asyncpg.connect(env.postgres_url)
    qm = QueueManager(Queries.from_asyncpg_connection(conn))
    qm.entrypoint("noop")(fn)
    running = asyncio.create_task(qm.run())
    try:
        return await asyncio.to_thread(wait)
    finally:
        qm.shutdown.set()
        await asyncio.wait_for(running, 30)
        await conn.close()


def w1(sizes: Sizes, env: Env) -> Result:
    async def go() -> float:
        pool, q = await _queries(env, pool_size=sizes.connections)
        try:
            return await async_count(
                lambda i: q.enqueue("noop", b"%d" % i), sizes.enqueues, sizes.callers
            )
        finally:
            await pool.close()

    return {"rate": asyncio.run(go())}


def w2(sizes: Sizes, env: Env) -> Result:
    import time

    async def go() -> float:
        pool, q = await _queries(env)
        try:
            started = time.perf_counter()
            for k in range(0, sizes.batched, sizes.batch):
                payloads: list[bytes | None] = [b"%d" % (k + i) for i in range(sizes.batch)]
                await q.enqueue(["noop"] * sizes.batch, payloads, [0] * sizes.batch)
            return sizes.batched / (time.perf_counter() - started)
        finally:
            await pool.close()

    return {"rate": asyncio.run(go())}


def w3(sizes: Sizes, env: Env) -> Result:
    tally = Tally(sizes.drained)

    async def noop(job: Any) -> None:
        tally.start()
        tally.finish()

    async def go() -> float:
        pool, q = await _queries(env)
        for k in range(0, sizes.drained, 1000):
            m = min(1000, sizes.drained - k)
            await q.enqueue(["noop"] * m, [None] * m, [0] * m)
        await pool.close()
        return await _work(env, noop, lambda: tally.wait(900))  # type: ignore[no-any-return]

    return {"rate": asyncio.run(go())}


def w4(sizes: Sizes, env: Env) -> Result:
    import time

    fires = Firings(sizes.fires)

    async def noop(job: Any) -> None:
        fires.fired(float(job.payload))

    async def go() -> Result:
        pool, q = await _queries(env)
        ats = due_times(sizes.fires, sizes.lead, sizes.span)
        now = time.time()
        after: list[dt.timedelta | None] = [dt.timedelta(seconds=at - now) for at in ats]
        payloads: list[bytes | None] = [repr(at).encode() for at in ats]
        await q.enqueue(["noop"] * len(ats), payloads, [0] * len(ats), after)
        await pool.close()
        return await _work(env, noop, lambda: fires.wait(sizes.lead + sizes.span + 10))  # type: ignore[no-any-return]

    return asyncio.run(go())


ADAPTERS = [
    Adapter("pgqueuer", "postgres", "peers", {"w1": w1, "w2": w2, "w3": w3, "w4": w4}, "postgres")
]
