"""Celery with Redis as broker (no result backend): task.delay from 64 threads; the drain runs
`celery worker` with its defaults (prefork, one process per core) as a subprocess, the task
counting in Redis. Runs in the peers' venv."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from bench.peers.load import thread_count
from bench.peers.spec import Adapter, Env, Result, Sizes


def _client(env: Env) -> Any:
    from redis import Redis

    conn = Redis.from_url(env.redis_url)
    conn.flushdb()
    return conn


def w1(sizes: Sizes, env: Env) -> Result:
    from bench.peers.celery_app import noop

    _client(env)
    return {"rate": thread_count(noop.delay, sizes.enqueues, sizes.callers)}


def w3(sizes: Sizes, env: Env) -> Result:
    from bench.peers.celery_app import counted

    conn = _client(env)
    for _ in range(sizes.drained):
        counted.delay(sizes.drained)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.peers.celery_app",
        "worker",
        "--loglevel",
        "WARNING",
    ]
    with open(os.path.join(env.workdir, "celery.log"), "ab") as log:
        worker = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while (last := conn.get("bench:last")) is None:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("celery worker did not drain; see celery.log")
            time.sleep(0.02)
    finally:
        worker.terminate()
        worker.wait(30)
    return {"rate": sizes.drained / (float(last) - float(conn.get("bench:first")))}


ADAPTERS = [Adapter("celery", "server", "peers", {"w1": w1, "w3": w3}, "redis")]
