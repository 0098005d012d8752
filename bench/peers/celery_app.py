"""The Celery app and tasks of the Celery adapter (`celery -A bench.peers.celery_app worker`).

Broker: Redis at BENCH_REDIS_URL, no result backend.
"""

from __future__ import annotations

import os
import time

from celery import Celery  # type: ignore[import-untyped]

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(n: int) -> None:
    return None


@app.task(name="counted")  # type: ignore[untyped-decorator]
def counted(n: int) -> None:
    """Marks the first start and the time the n-th finished, in Redis (one round trip each)."""
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        client.set("bench:first", repr(time.time()), nx=True)
        if client.incr("bench:done") == n:
            client.set("bench:last", repr(time.time()))
