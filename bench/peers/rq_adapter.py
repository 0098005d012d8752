"""RQ on Redis: Queue.enqueue from 64 threads and enqueue_many in pipelined batches. Its
default worker forks a process per job, so no drain figure. Runs in the peers' venv."""

from __future__ import annotations

import time
from typing import Any

from bench.peers.load import thread_count
from bench.peers.spec import Adapter, Env, Result, Sizes


def noop(n: int) -> None:
    return None


def _queue(env: Env) -> Any:
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(env.redis_url)
    conn.flushdb()
    return Queue("bench", connection=conn)


def w1(sizes: Sizes, env: Env) -> Result:
    q = _queue(env)
    return {"rate": thread_count(lambda i: q.enqueue(noop, i), sizes.enqueues, sizes.callers)}


def w2(sizes: Sizes, env: Env) -> Result:
    from rq import Queue

    q = _queue(env)
    started = time.perf_counter()
    for k in range(0, sizes.batched, sizes.batch):
        with q.connection.pipeline() as pipe:
            jobs = [Queue.prepare_data(noop, (k + i,)) for i in range(sizes.batch)]
            q.enqueue_many(jobs, pipeline=pipe)
            pipe.execute()
    return {"rate": sizes.batched / (time.perf_counter() - started)}


ADAPTERS = [Adapter("rq", "server", "peers", {"w1": w1, "w2": w2}, "redis")]
