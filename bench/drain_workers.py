"""Remote drain throughput: no-op jobs through a server subprocess and Python SDK workers.

    .venv/bin/python -m bench.drain_workers --jobs 20000 --workers 1 --concurrency 500

Enqueues the jobs first (BatchEnqueueJobs), then times workers leasing, running and
completing all of them. Not a test: a measurement (DESIGN target: >= 5,000 jobs/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from jobwheel.client.worker import Worker
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import job_service_pb2_grpc

from tests.acceptance.process import ServerProcess


async def _work(address: str, name: str, concurrency: int, total: Any, done: Any) -> None:
    worker = Worker(address, worker_id=name, concurrency=concurrency, poll_wait=1.0)

    @worker.task("bench.noop")
    async def noop(payload: dict[str, Any]) -> None:
        return None

    run = asyncio.create_task(worker.run())
    counted = 0
    while not done.is_set():
        await asyncio.sleep(0.01)
        with total.get_lock():
            total.value += worker.completed - counted
        counted = worker.completed
    await worker.stop(1.0)
    await run


def _worker_main(address: str, name: str, concurrency: int, total: Any, done: Any) -> None:
    asyncio.run(_work(address, name, concurrency, total, done))


async def enqueue(address: str, jobs: int, task: str = "bench.noop") -> None:
    """`jobs` jobs of `task`, in BatchEnqueueJobs calls of 1,000."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        for start in range(0, jobs, 1000):
            batch = [jpb.EnqueueJobRequest(task=task) for _ in range(min(1000, jobs - start))]
            await stub.BatchEnqueueJobs(jpb.BatchEnqueueJobsRequest(jobs=batch))


@contextlib.contextmanager
def served(db: str) -> Iterator[str]:
    """The address of a server process on `db` (a temporary SQLite file when it is '')."""
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(db or f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp) / "s.log")
        server.start()
        try:
            yield server.address
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    with served(args.db) as address:
        asyncio.run(enqueue(address, args.jobs))
        done = multiprocessing.Event()
        total = multiprocessing.Value("q", 0)
        procs = [
            multiprocessing.Process(
                target=_worker_main,
                args=(address, f"bench-{i}", args.concurrency, total, done),
            )
            for i in range(args.workers)
        ]
        began = time.monotonic()
        for p in procs:
            p.start()
        while total.value < args.jobs:
            time.sleep(0.01)
        elapsed = time.monotonic() - began
        done.set()
        for p in procs:
            p.join(10)
        print(
            f"{args.jobs} jobs, {args.workers} worker process(es) x {args.concurrency}: "
            f"{elapsed:.2f}s, {args.jobs / elapsed:,.0f} jobs/s"
        )


if __name__ == "__main__":
    main()
