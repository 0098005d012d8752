"""Scenario: one caller's reads (and a write), beside a bare grpc.aio echo of the same RPCs.

GetJob (the read a client polls a job's state with), ListJobs of a page of 10 (what a
dashboard or the CLI shows) and EnqueueJob (the durable write a web request makes), one call
at a time (no concurrency: the latency one request sees, not a throughput). The echo answers
with fixed jobs (its EnqueueJob with the request's) and reads or stores nothing, so the
difference is what jobwheel does per call (the store's reads and commits, the conversions).
jobwheel's database holds a few thousand jobs. Rounds alternate the two servers; the figures
are the percentiles of all calls of each.
"""

from __future__ import annotations

import sys
import time

from google.protobuf.message import Message
from jobwheel.v1 import job_service_pb2 as pb

from bench import jobs, procs, profile
from bench.lateness import percentile
from bench.options import Options
from bench.report import Row

ROUNDS = 3
STORED = 5_000  # jobs in jobwheel's database
PAGE = 10  # jobs per ListJobs call


async def _latencies(address: str, method: str, req: Message, calls: int) -> list[float]:
    """Seconds of each of `calls` sequential calls of `method`, after a warm-up."""
    async with jobs.channel(address) as ch:
        call = getattr(jobs.stub(ch), method)
        for _ in range(max(20, calls // 10)):
            await call(req)
        out = []
        for _ in range(calls):
            start = time.perf_counter()
            await call(req)
            out.append(time.perf_counter() - start)
        return out


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    """p50 and p99 of `seconds`, in ms."""
    ordered = sorted(seconds)
    return percentile(ordered, 50) * 1000, percentile(ordered, 99) * 1000


async def run(opts: Options) -> list[Row]:
    calls = 300 if opts.seconds < 5 else 1_000  # per round and method (--quick: fewer)
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
        methods: list[tuple[str, str, Message]] = [
            ("GetJob", "GetJob", pb.GetJobRequest(id=job_id)),
            (f"ListJobs, page of {PAGE}", "ListJobs", pb.ListJobsRequest(page_size=PAGE)),
            ("EnqueueJob (durable)", "EnqueueJob", jobs.request(jobs.UNHANDLED)),
        ]
        runs: dict[tuple[str, str], list[float]] = {}
        for i in range(ROUNDS):
            print(f"[read] round {i + 1}/{ROUNDS}: echo, jobwheel ...", file=sys.stderr)
            for name, method, req in methods:
                for server, who in ((echo, "echo"), (srv, "jobwheel")):
                    out = None
                    if opts.profile and i == 0 and who == "jobwheel":
                        out = opts.profile / f"read-{method}.txt"
                    with profile.sampled(server.pid, out):
                        got = await _latencies(server.address, method, req, calls)
                    runs.setdefault((name, who), []).extend(got)
    rows = []
    for name, _, _ in methods:
        ours, base = _percentiles(runs[name, "jobwheel"]), _percentiles(runs[name, "echo"])
        row = Row(
            f"{name}, one caller, latency p50/p99",
            f"{ours[0]:.2f}/{ours[1]:.2f} ms",
            f"echo {base[0]:.2f}/{base[1]:.2f} ms",
            f"{ours[0] / base[0]:.2f}x echo's p50",
        )
        row.notes.append(f"{ROUNDS} rounds of {calls:,} sequential calls each, servers alternated")
        rows.append(row)
    return rows
