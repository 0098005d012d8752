"""Scenario 2: BatchEnqueueJobs with 1,000 jobs per call (durable), jobs/s."""

from __future__ import annotations

import sys

from bench import jobs, procs, profile
from bench.callers import closed_loop
from bench.cpu import CpuShare
from bench.options import Options
from bench.report import Row, rate

TARGET = 60_000  # on SQLite; on PostgreSQL the target is 1.2x pgqueuer (python -m bench peers)
CALLERS = (1, 4)


async def run(opts: Options) -> list[Row]:
    req = jobs.batch(jobs.UNHANDLED, opts.batch_size)
    rows: list[Row] = []
    with procs.jobwheel_server(
        opts.db("batch"), opts.log("batch"), handlers=False, url=opts.db_url
    ) as srv:
        async with jobs.channel(srv.address) as ch:
            stub = jobs.stub(ch)
            await stub.BatchEnqueueJobs(req)
            for callers in CALLERS:
                print(f"[batch] {opts.batch_size}/call, {callers} callers ...", file=sys.stderr)
                out = opts.profile / f"batch-{callers}.txt" if opts.profile else None
                share = CpuShare(srv.pid, postgres=opts.db_url is not None)
                with profile.sampled(srv.pid, out), share as cpu:
                    t = await closed_loop(
                        lambda: stub.BatchEnqueueJobs(req), callers=callers, seconds=opts.seconds
                    )
                per_s = t.per_second * opts.batch_size
                row = Row(
                    f"BatchEnqueueJobs, {opts.batch_size:,}/call, {callers} caller(s)",
                    rate(per_s, "jobs/s"),
                    target=f">= {TARGET:,} jobs/s" if opts.db_url is None else "-",
                    met=per_s >= TARGET if opts.db_url is None else None,
                )
                if opts.db_url is not None:
                    row.notes.append("target on PostgreSQL: >= 1.2x pgqueuer (bench peers)")
                row.notes.append(f"CPU: {cpu}")
                if t.errors:
                    row.notes.append(f"{t.errors} calls failed")
                rows.append(row)
    return rows
