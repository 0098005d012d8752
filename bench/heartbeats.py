"""HeartbeatJobs cost: one worker holding `--jobs` leases renews all of them in one call.

    .venv/bin/python -m bench.heartbeats --jobs 1000 --calls 50 [--db postgresql://...]

Prints milliseconds per call (p50, max) and microseconds per renewed lease. Not a test: a
measurement of the server's heartbeat path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import grpc
from jobwheel.v1 import worker_service_pb2 as wpb
from jobwheel.v1 import worker_service_pb2_grpc

from bench.drain_workers import enqueue, served

WORKER = "bench-heartbeats"


async def _measure(address: str, jobs: int, calls: int) -> list[float]:
    await enqueue(address, jobs, "bench.held")
    async with grpc.aio.insecure_channel(address) as channel:
        worker_stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        held: list[wpb.Lease] = []
        while len(held) < jobs:
            reply = await worker_stub.LeaseJobs(
                wpb.LeaseJobsRequest(
                    worker_id=WORKER, tasks=["bench.held"], max_jobs=min(1000, jobs - len(held))
                )
            )
            held.extend(reply.leases)
        beats = [wpb.JobHeartbeat(job_id=lease.job.id, epoch=lease.epoch) for lease in held]
        took = []
        for _ in range(calls):
            for start in range(0, jobs, 1000):
                request = wpb.HeartbeatJobsRequest(
                    worker_id=WORKER, heartbeats=beats[start : start + 1000]
                )
                began = time.perf_counter()
                reply = await worker_stub.HeartbeatJobs(request)
                took.append(time.perf_counter() - began)
                assert all(r.HasField("expire_time") for r in reply.results), reply
        return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--db", default="")
    args = parser.parse_args()
    with served(args.db) as address:
        took = asyncio.run(_measure(address, args.jobs, args.calls))
    per_call = min(1000, args.jobs)
    print(
        f"HeartbeatJobs of {per_call} leases ({args.jobs} held, {len(took)} calls): "
        f"p50 {statistics.median(took) * 1e3:.1f} ms, max {max(took) * 1e3:.1f} ms, "
        f"{statistics.median(took) / per_call * 1e6:.0f} µs a lease"
    )


if __name__ == "__main__":
    main()
