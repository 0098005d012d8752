"""Scenario 1: single EnqueueJob calls (durable) vs a bare grpc.aio echo of the same RPC.

Both servers run in their own subprocess, side by side (the idle one costs nothing); one client
process drives C concurrent callers over one channel, alternating echo and jobwheel windows for
a few rounds, and each keeps its best window (single-RPC throughput on 2 shared cores varies by
~25% from window to window). Client and server share the 2 cores: the notes say how much
each used.
"""

from __future__ import annotations

import sys

from bench import jobs, procs, profile
from bench.callers import Throughput, closed_loop
from bench.cpu import CpuShare
from bench.options import Options
from bench.report import Row, rate

ROUNDS = 3
TARGET = 0.8


async def _window(
    server: procs.Subprocess, opts: Options, seconds: float
) -> tuple[Throughput, CpuShare]:
    req = jobs.request(jobs.UNHANDLED)
    async with jobs.channel(server.address) as ch:
        stub = jobs.stub(ch)
        await stub.EnqueueJob(req)  # connected
        with CpuShare(server.pid) as cpu:
            got = await closed_loop(
                lambda: stub.EnqueueJob(req), callers=opts.callers, seconds=seconds
            )
        return got, cpu


async def run(opts: Options) -> list[Row]:
    seconds = max(1.0, opts.seconds / 2)
    runs: dict[str, list[tuple[Throughput, CpuShare]]] = {"echo": [], "jobwheel": []}
    db, log = opts.db("enqueue"), opts.log("enqueue")
    with (
        procs.echo_server(opts.log("echo")) as echo,
        procs.jobwheel_server(db, log, handlers=False, url=opts.db_url) as srv,
    ):
        for i in range(ROUNDS):
            print(f"[enqueue] round {i + 1}/{ROUNDS}: echo, jobwheel ...", file=sys.stderr)
            runs["echo"].append(await _window(echo, opts, seconds))
            out = opts.profile / "enqueue.txt" if opts.profile and i == 0 else None
            with profile.sampled(srv.pid, out):
                runs["jobwheel"].append(await _window(srv, opts, seconds))
    base, base_cpu = max(runs["echo"], key=lambda r: r[0].per_second)
    got, got_cpu = max(runs["jobwheel"], key=lambda r: r[0].per_second)
    ratio = got.per_second / base.per_second if base.per_second else 0.0
    row = Row(
        f"EnqueueJob, {opts.callers} concurrent callers, durable (synchronous=FULL)",
        rate(got.per_second, "calls/s"),
        "echo " + rate(base.per_second, "calls/s"),
        f"{ratio:.2f}x",
        f">= {TARGET}x echo",
        ratio >= TARGET,
    )
    for name, windows in runs.items():
        each = ", ".join(f"{t.per_second:,.0f}" for t, _ in windows)
        row.notes.append(f"{name} windows of {seconds:g} s: {each} calls/s (best kept)")
    row.notes.append(f"CPU in the best windows: echo {base_cpu}; jobwheel {got_cpu}")
    row.notes.append(
        "jobwheel on its default event loop (uvloop where installed), the echo on asyncio's"
    )
    errors = sum(t.errors for w in runs.values() for t, _ in w)
    if errors:
        row.notes.append(f"{errors} calls failed")
    return [row]
