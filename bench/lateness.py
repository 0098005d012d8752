"""Scenario 4: fire lateness of scheduled one-off jobs, idle and at 2,000 fires/s.

Jobs are enqueued ahead (BatchEnqueueJobs) with Schedule.start_time spread uniformly over a
span that begins after the enqueue is done (its time is measured first, by enqueueing jobs due
at once: a slow machine gets the lead it needs, so the figure is lateness, not enqueue time);
lateness = Job.start_time (the attempt's start) - Job.schedule.start_time, both from the
server's clock. While they fire the client only polls ListJobs every 250 ms, so the server has
the 2 cores to itself.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from bench import jobs, procs
from bench.handlers import NOOP
from bench.options import Options
from bench.report import Row, millis

LEAD = 1.0  # seconds between the end of the enqueue and the first due time


@dataclass(frozen=True)
class Lateness:
    fires: int
    p50: float
    p99: float
    max: float
    early: int  # fired before their due time (never expected)
    enqueue_seconds: float


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank."""
    rank = max(1, round(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def measure(
    address: str, label: str, count: int, span: float, enqueue_budget: float
) -> Lateness:
    async with jobs.channel(address) as ch:
        stub = jobs.stub(ch)
        reqs = _scheduled(count, label, time.time() + enqueue_budget + LEAD, span)
        started = time.time()
        await jobs.enqueue_all(stub, reqs, 1000)
        enqueued = time.time() - started
        await jobs.wait_drained(stub, every=0.25, within=span + enqueue_budget + 120)
        done = await jobs.list_all(stub, job_pb2.JobFilter(labels={"run": label}))
    late = sorted(
        (j.start_time.ToMicroseconds() - j.schedule.start_time.ToMicroseconds()) / 1e6
        for j in done
        if j.HasField("start_time")
    )
    return Lateness(
        len(late),
        percentile(late, 50),
        percentile(late, 99),
        late[-1],
        sum(x < 0 for x in late),
        enqueued,
    )


def _row(name: str, got: Lateness, target: float, budget: float) -> Row:
    row = Row(
        name,
        f"p50 {millis(got.p50)}, p99 {millis(got.p99)}",
        target=f"p99 <= {target * 1000:.0f} ms",
        met=got.p99 <= target,
    )
    row.notes.append(f"{got.fires:,} fired, max {millis(got.max)}, {got.early} early")
    if got.enqueue_seconds > budget + LEAD:
        row.notes.append(
            f"enqueue took {got.enqueue_seconds:.2f} s, past the first due time: "
            "lateness includes it"
        )
    return row


def _scheduled(count: int, label: str, begin: float, span: float) -> list[pb.EnqueueJobRequest]:
    """`count` no-op jobs labelled run=`label`, due evenly over `span` s from `begin` (epoch s),
    each with a schedule of its own."""
    reqs = []
    for i in range(count):
        req = jobs.request(NOOP, i)
        due = timestamp_pb2.Timestamp()
        due.FromMicroseconds(int((begin + span * i / count) * 1e6))
        req.schedule.start_time.CopyFrom(due)
        req.labels["run"] = label
        reqs.append(req)
    return reqs


async def enqueue_seconds(address: str, count: int) -> float:
    """How long enqueueing `count` jobs takes here, measured on a quarter of them (at most
    2,500) shaped as the measured ones (each its own schedule: they cost more to take in than
    jobs without) but due at once, which run and drain before this returns."""
    sample = max(1, min(count // 4, 2_500))
    async with jobs.channel(address) as ch:
        stub = jobs.stub(ch)
        reqs = _scheduled(sample, "estimate", time.time(), 0.0)
        started = time.perf_counter()
        await jobs.enqueue_all(stub, reqs, 1000)
        took = time.perf_counter() - started
        await jobs.wait_drained(stub, every=jobs.DRAIN_POLL, within=120)
    return took * count / sample


async def run(opts: Options) -> list[Row]:
    rows = []
    with procs.jobwheel_server(opts.db("lateness"), opts.log("lateness"), url=opts.db_url) as srv:
        print(f"[lateness] idle: {opts.idle_fires} over {opts.idle_span:g} s ...", file=sys.stderr)
        idle = await measure(srv.address, "idle", opts.idle_fires, opts.idle_span, 0.2)
        rows.append(
            _row(
                f"fire lateness idle ({opts.idle_fires} jobs over {opts.idle_span:g} s)",
                idle,
                0.005,
                0.2,
            )
        )
        per_s = opts.loaded_fires / opts.loaded_span
        print(
            f"[lateness] loaded: {opts.loaded_fires:,} over {opts.loaded_span:g} s ...",
            file=sys.stderr,
        )
        # the enqueue's measured time, doubled for a busy moment, and slack
        budget = 0.5 + 2 * await enqueue_seconds(srv.address, opts.loaded_fires)
        loaded = await measure(srv.address, "loaded", opts.loaded_fires, opts.loaded_span, budget)
        rows.append(
            _row(
                f"fire lateness at {per_s:,.0f} fires/s "
                f"({opts.loaded_fires:,} jobs over {opts.loaded_span:g} s)",
                loaded,
                0.050,
                budget,
            )
        )
    return rows
