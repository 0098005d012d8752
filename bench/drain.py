"""Scenario 3: drain of N pre-enqueued no-op in-process jobs, end to end, beside huey.

The N jobs are enqueued (BatchEnqueueJobs) into a server without the handler, where they wait
QUEUED; then a server with the handler starts on the same database. The drain runs from the
first attempt's start to the last attempt's end (Job.start_time and end_time, server clock),
as huey's from its first start to its N-th completion signal; the client polls (ListJobs,
every jobs.DRAIN_POLL) until no job is left pending, then reads the times. The server process
has the 2 cores to itself but for that poll.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from jobwheel.v1 import job_pb2

from bench import huey_peer, jobs, procs, profile
from bench.cpu import CpuShare
from bench.handlers import NOOP
from bench.options import Options
from bench.report import Row, rate

TARGET = 10_000
TARGET_VS_HUEY = 3.0


@dataclass(frozen=True)
class Drain:
    jobs: int
    seconds: float  # first start -> last end_time, both server clock
    completed: int
    seen_seconds: float  # first start -> the client saw none pending (server, client clocks)
    cpu: str

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds


async def jobwheel_drain(opts: Options, n: int) -> Drain:
    db, log = opts.db("drain"), opts.log("drain")
    with procs.jobwheel_server(db, log, handlers=False, url=opts.db_url) as loader:
        async with jobs.channel(loader.address) as ch:
            reqs = (jobs.request(NOOP, i) for i in range(n))
            await jobs.enqueue_all(jobs.stub(ch), reqs, opts.batch_size)
    with procs.jobwheel_server(db, log, handlers=True, url=opts.db_url) as srv:
        async with jobs.channel(srv.address) as ch:
            stub = jobs.stub(ch)
            out = opts.profile / "drain.txt" if opts.profile else None
            share = CpuShare(srv.pid, postgres=opts.db_url is not None)
            with profile.sampled(srv.pid, out), share as cpu:
                seen_done = await jobs.wait_drained(stub, every=jobs.DRAIN_POLL, within=600)
            done = await jobs.list_all(stub)
    first, last = jobs.drained_span(done)
    return Drain(
        jobs=n,
        seconds=last - first,
        completed=sum(j.state == job_pb2.JOB_STATE_COMPLETED for j in done),
        seen_seconds=seen_done - first,
        cpu=str(cpu),
    )


async def run(opts: Options) -> list[Row]:
    n = opts.drain_jobs
    print(f"[drain] jobwheel, {n:,} jobs ...", file=sys.stderr)
    ours = await jobwheel_drain(opts, n)
    peers = []
    for workers in sorted({1, opts.huey_workers}):
        print(f"[drain] huey, {workers} thread worker(s), {n:,} jobs ...", file=sys.stderr)
        peers.append((workers, huey_peer.drain(opts, n, workers)))
    best_workers, best = max(peers, key=lambda p: p[1].per_second)
    ratio = ours.per_second / best.per_second
    row = Row(
        f"drain {n:,} pre-enqueued no-op in-process jobs, end to end",
        rate(ours.per_second, "jobs/s"),
        f"huey {rate(best.per_second, 'jobs/s')}",
        f"{ratio:.2f}x",
        f">= {TARGET:,} jobs/s and >= {TARGET_VS_HUEY:g}x huey",
        ours.per_second >= TARGET and ratio >= TARGET_VS_HUEY,
    )
    row.notes.append(
        f"jobwheel {ours.seconds:.2f} s first start -> last end_time, server clock "
        f"({ours.seen_seconds:.2f} s first start -> all seen COMPLETED, polled every "
        f"{jobs.DRAIN_POLL:g} s); "
        f"{ours.completed:,}/{n:,} COMPLETED; CPU while draining: {ours.cpu}"
    )
    row.notes.append(
        "huey: SqliteHuey defaults (WAL, SQLite's default synchronous=FULL, as jobwheel), "
        "huey_consumer thread workers, first start -> N-th completion signal; "
        + ", ".join(
            f"{w} worker(s) {rate(h.per_second, 'jobs/s')}"
            + (" (the baseline: huey's best)" if w == best_workers else "")
            for w, h in peers
        )
        + f"; its enqueue (one commit per task) {rate(best.enqueue_per_s, 'tasks/s')}"
    )
    return [row]
