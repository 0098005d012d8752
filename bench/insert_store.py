"""Insert throughput of Store.insert_jobs in batches (a measurement, not a test).

    .venv/bin/python -m bench.insert_store [URL] [--batches N] [--size N] [--callers N]
        [--sync FULL|NORMAL|OFF] [--ordered-ids]

Without URL: a fresh SQLite file (synchronous=FULL) in a temporary directory. Jobs are built
before the clock starts; the numbers cover conversion, SQL and commit. It also prints the CPU
time of the event loop's thread per insert_jobs call (`--batches 2000 --size 1`: the loop's
cost of one single-job write).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid

from jobwheel.server.model import NewJob
from jobwheel.server.storage import open_store

from tests.integration.storage.factories import new_job


def time_ordered_id() -> str:
    """A UUIDv7-shaped id: 48-bit millisecond time, then random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def make_job(i: int, ordered_ids: bool = False) -> NewJob:
    return new_job(
        id=time_ordered_id() if ordered_ids else str(uuid.uuid4()),
        task="send_email",
        payload={"to": f"user{i}@example.com", "n": i},
        labels={"team": "a"},
        create_time=1,
        next_run_time=1,
    )


async def run(
    url: str, batches: int, size: int, callers: int, ordered_ids: bool, synchronous: str
) -> tuple[float, float]:
    """Rows/s, and the event loop thread's CPU seconds per insert_jobs call."""
    store = await open_store(url, sqlite_synchronous=synchronous)
    try:
        data = [[make_job(b * size + i, ordered_ids) for i in range(size)] for b in range(batches)]

        async def caller(k: int) -> None:
            for batch in data[k::callers]:
                await store.insert_jobs(batch)

        start, cpu = time.perf_counter(), time.thread_time()
        await asyncio.gather(*(caller(k) for k in range(callers)))
        loop_cpu = (time.thread_time() - cpu) / batches
        return batches * size / (time.perf_counter() - start), loop_cpu
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--sync", default="FULL", help="SQLite synchronous: FULL, NORMAL, OFF")
    parser.add_argument(
        "--ordered-ids", action="store_true", help="time-ordered (UUIDv7-like) ids, not uuid4"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/bench.db"
        rate, loop_cpu = asyncio.run(
            run(url, args.batches, args.size, args.callers, args.ordered_ids, args.sync)
        )
    ids = "time-ordered" if args.ordered_ids else "uuid4"
    print(
        f"{rate:,.0f} rows/s  ({args.batches} batches of {args.size}, {args.callers} callers, "
        f"{ids} ids, synchronous={args.sync}); event loop CPU {loop_cpu * 1e6:,.0f} µs per call"
    )


if __name__ == "__main__":
    main()
