"""Scenario: one caller's GetJob latency, beside a bare grpc.aio echo of the same RPC.

The read a client polls a job's state with, one call at a time (no concurrency: this is the
latency one request sees, not a throughput). The echo answers with a fixed job and reads
nothing, so the difference is what jobwheel does per read (the store's read, the job's
conversion). jobwheel's database holds a few thousand jobs; the job read is one of them.
Rounds alternate the two servers; the figures are the percentiles of all calls of each.
"""

from __future__ import annotations

import statistics
import sys
import time

from jobwheel.v1 import job_service_pb2 as pb

from bench import jobs, procs
from bench.options import Options
from bench.report import Row

ROUNDS = 3
STORED = 5_000  # jobs in jobwheel's database


async def _latencies(address: str, job_id: str, calls: int) -> list[float]:
    """Seconds of each of `calls` sequential GetJob calls, after a warm-up."""
    req = pb.GetJobRequest(id=job_id)
    async with jobs.channel(address) as ch:
        stub = jobs.stub(ch)
        for _ in range(max(20, calls // 10)):
            await stub.GetJob(req)
        out = []
        for _ in range(calls):
            start = time.perf_counter()
            await stub.GetJob(req)
            out.append(time.perf_counter() - start)
        return out


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 of `seconds`, in ms."""
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


async def run(opts: Options) -> list[Row]:
    calls = 300 if opts.seconds < 5 else 1_000  # per round (--quick: fewer)
    runs: dict[str, list[float]] = {"echo": [], "jobwheel": []}
    db, log = opts.db("read"), opts.log("read")
    with (
        procs.echo_server(opts.log("echo-read")) as echo,
        procs.jobwheel_server(db, log, handlers=False, url=opts.db_url) as srv,
    ):
        async with jobs.channel(srv.address) as ch:
            stub = jobs.stub(ch)
            await jobs.enqueue_all(
                stub, (jobs.request(jobs.UNHANDLED, i) for i in range(STORED)), opts.batch_size
            )
            job_id = (await stub.EnqueueJob(jobs.request(jobs.UNHANDLED))).job.id
        for i in range(ROUNDS):
            print(f"[read] round {i + 1}/{ROUNDS}: echo, jobwheel ...", file=sys.stderr)
            runs["echo"] += await _latencies(echo.address, job_id, calls)
            runs["jobwheel"] += await _latencies(srv.address, job_id, calls)
    ours, base = _percentiles(runs["jobwheel"]), _percentiles(runs["echo"])
    row = Row(
        "GetJob, one caller, latency p50/p99",
        f"{ours[0]:.2f}/{ours[1]:.2f} ms",
        f"echo {base[0]:.2f}/{base[1]:.2f} ms",
        f"{ours[0] / base[0]:.2f}x echo's p50",
    )
    row.notes.append(f"{ROUNDS} rounds of {calls:,} sequential calls each, servers alternated")
    return [row]
