"""Listing among many jobs: the newest 100 FAILED jobs out of N (default 1,000,000).

    python -m bench.list_large [--n 1000000] [--db sqlite:///path.db]

Fills a fresh database through the store (1% of the jobs FAILED, spread evenly), then times
ListJobs' query (filter states=[FAILED], newest first, page of 100) and a page further on,
and prints the query plan. Not a test: figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from jobwheel.server import model
from jobwheel.server.ids import new_id
from jobwheel.server.storage import open_store
from jobwheel.server.storage.schema import jobs
from sqlalchemy import text, update


def new_job(now: int) -> model.NewJob:
    return model.NewJob(
        id=new_id(),
        queue="default",
        task="bench.noop",
        payload={"n": 1},
        labels={},
        priority=0,
        state=model.JobState.QUEUED,
        schedule=None,
        retry_policy=model.RetryPolicy(),
        timeout=None,
        idempotency_key=None,
        http=None,
        create_time=now,
        next_run_time=now,
    )


async def main(n: int, url: str) -> None:
    store = await open_store(url, sqlite_synchronous="OFF")
    started = time.perf_counter()
    batch = 10_000
    for _ in range(0, n, batch):
        now = time.time_ns() // 1000
        await store.insert_jobs([new_job(now) for _ in range(batch)])
    async with store.write_engine.begin() as conn:
        await conn.execute(update(jobs).where(jobs.c.seq % 100 == 0).values(state="failed"))
    print(f"filled {n:,} jobs in {time.perf_counter() - started:.1f} s")
    flt = model.JobFilter(states=(model.JobState.FAILED,))
    timings, last = [], None
    for _ in range(20):
        t0 = time.perf_counter()
        page = await store.list_jobs(flt, limit=101, descending=True)
        timings.append((time.perf_counter() - t0) * 1000)
        last = page[-1].seq
    t0 = time.perf_counter()
    await store.list_jobs(flt, limit=101, after_seq=last, descending=True)
    further = (time.perf_counter() - t0) * 1000
    print(
        f"newest 100 FAILED of {n:,}: median {statistics.median(timings):.2f} ms, "
        f"max {max(timings):.2f} ms; next page {further:.2f} ms"
    )
    if store.dialect.name == "sqlite":
        async with store.read_engine.connect() as conn:
            plan = await conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE state = 'failed' "
                    "ORDER BY seq DESC LIMIT 101"
                )
            )
            print("plan:", "; ".join(str(r[-1]) for r in plan))
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    url = args.db or f"sqlite:///{Path(tempfile.mkdtemp()) / 'list.db'}"
    asyncio.run(main(args.n, url))
