"""What metrics cost: single EnqueueJob calls to a server with --metrics-listen against one
without, side by side (alternating windows, best of each kept, as in the enqueue scenario),
and how long a scrape of /metrics takes after the workload."""

from __future__ import annotations

import asyncio
import re
import sys
import time
import urllib.request

from bench import jobs, procs
from bench.callers import Throughput, closed_loop
from bench.options import Options
from bench.report import Row, millis, rate

ROUNDS = 3
TARGET = 0.9
METRICS_PORT = re.compile(r"metrics on port (\d+)")
# the enqueue group commit's histogram: jobs written per transaction
_GROUP = 'jobwheel_group_commit_batch_size_{}{{operation="enqueue"}} ([0-9.e+]+)'


async def _window(server: procs.Subprocess, opts: Options, seconds: float) -> Throughput:
    req = jobs.request(jobs.UNHANDLED)
    async with jobs.channel(server.address) as ch:
        stub = jobs.stub(ch)
        await stub.EnqueueJob(req)
        return await closed_loop(
            lambda: stub.EnqueueJob(req), callers=opts.callers, seconds=seconds
        )


def _scrape(port: int) -> tuple[float, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read()
    return time.perf_counter() - start, body


def _mean_group(body: bytes) -> float | None:
    """Jobs per enqueue transaction so far: each transaction's fixed cost (the commit's fsync,
    the driver-thread hop) is shared by this many calls."""
    text = body.decode()
    found = [re.search(_GROUP.format(part), text) for part in ("sum", "count")]
    if found[0] is None or found[1] is None or not float(found[1].group(1)):
        return None
    return float(found[0].group(1)) / float(found[1].group(1))


async def run(opts: Options) -> list[Row]:
    seconds = max(1.0, opts.seconds / 2)
    runs: dict[str, list[Throughput]] = {"off": [], "on": []}
    with (
        procs.jobwheel_server(
            opts.db("metrics-off"), opts.log("metrics-off"), handlers=False
        ) as off,
        procs.jobwheel_server(
            opts.db("metrics-on"),
            opts.log("metrics-on"),
            handlers=False,
            extra=["--metrics-listen", "127.0.0.1:0"],
        ) as on,
    ):
        for i in range(ROUNDS):
            print(f"[metrics] round {i + 1}/{ROUNDS}: off, on ...", file=sys.stderr)
            runs["off"].append(await _window(off, opts, seconds))
            runs["on"].append(await _window(on, opts, seconds))
        found = METRICS_PORT.search(opts.log("metrics-on").read_text())
        assert found, "the server did not say its metrics port"
        scrapes = [await asyncio.to_thread(_scrape, int(found.group(1))) for _ in range(5)]
    base = max(runs["off"], key=lambda t: t.per_second)
    got = max(runs["on"], key=lambda t: t.per_second)
    ratio = got.per_second / base.per_second if base.per_second else 0.0
    row = Row(
        f"EnqueueJob with metrics on, {opts.callers} concurrent callers",
        rate(got.per_second, "calls/s"),
        "metrics off " + rate(base.per_second, "calls/s"),
        f"{ratio:.2f}x",
        f">= {TARGET}x off",
        ratio >= TARGET,
    )
    for name, windows in runs.items():
        each = ", ".join(f"{t.per_second:,.0f}" for t in windows)
        row.notes.append(f"metrics {name}: windows of {seconds:g} s: {each} calls/s (best kept)")
    took = sorted(s for s, _ in scrapes)
    row.notes.append(
        f"/metrics scrape after the workload: median {millis(took[len(took) // 2])}, "
        f"{len(scrapes[0][1]):,} bytes"
    )
    group = _mean_group(scrapes[-1][1])
    if group is not None:
        row.notes.append(f"enqueue group commit: {group:.1f} jobs per transaction on average")
    return [row]
