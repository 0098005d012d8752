"""huey 2+/3 on SQLite (SqliteHuey) and on Redis (RedisHuey), its consumer with its defaults
(one thread worker) run in this process. Runs in the peers' venv."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.peers.load import Firings, Tally, due_times, thread_count
from bench.peers.spec import Adapter, Env, Hook, Result, Sizes


def _huey(env: Env, redis: bool) -> Any:
    from huey import RedisHuey, SqliteHuey  # type: ignore[import-untyped]

    if redis:
        h = RedisHuey("bench", url=env.redis_url)
        h.storage.conn.flushdb()
        return h
    return SqliteHuey("bench", filename=os.path.join(env.workdir, "huey.db"))


def _drain_or_fire(huey: Any, wait: Any) -> Any:
    consumer = huey.create_consumer()  # defaults: 1 thread worker, 1 s scheduler tick
    consumer.start()
    try:
        return wait()
    finally:
        consumer.stop(graceful=False)


def hooks(redis: bool) -> dict[str, Hook]:
    def w1(sizes: Sizes, env: Env) -> Result:
        huey = _huey(env, redis)
        noop = huey.task()(lambda n: None)
        return {"rate": thread_count(noop, sizes.enqueues, sizes.callers)}

    def w3(sizes: Sizes, env: Env) -> Result:
        huey = _huey(env, redis)
        tally = Tally(sizes.drained)

        @huey.task()  # type: ignore[untyped-decorator]
        def noop(n: int) -> None:
            tally.start()
            tally.finish()

        for i in range(sizes.drained):
            noop(i)
        return {"rate": _drain_or_fire(huey, lambda: tally.wait(900))}

    def w4(sizes: Sizes, env: Env) -> Result:
        huey = _huey(env, redis)
        fires = Firings(sizes.fires)

        @huey.task()  # type: ignore[untyped-decorator]
        def due(at: float) -> None:
            fires.fired(at)

        for at in due_times(sizes.fires, sizes.lead, sizes.span):
            due.schedule(args=(at,), delay=max(0.0, at - time.time()))
        return _drain_or_fire(huey, lambda: fires.wait(sizes.lead + sizes.span + 10))  # type: ignore[no-any-return]

    return {"w1": w1, "w3": w3, "w4": w4}


ADAPTERS = [
    Adapter("huey/SQLite", "embedded", "peers", hooks(redis=False)),
    Adapter("huey/Redis", "server", "peers", hooks(redis=True), "redis"),
]
