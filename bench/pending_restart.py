"""A restart with 1,000,000 future jobs pending: memory, time to answer, first on-time fires.

    python -m bench.pending_restart [--pending 1000000] [--db PATH] [--soon 20]

Builds a SQLite file (or reuses `--db` if it already holds the pending jobs) with `--pending`
one-off jobs due from an hour ahead, spread over a day: the wheel's horizon holds none of
them. Just before the server starts, `--soon` more jobs are written straight to the file, due
3-4 s after the start (the server learns of them only from the database), and once it answers
`--soon` jobs are enqueued through the API due 1-2 s later. Prints the server's RSS (after the
start and at its peak), the time to its first answer, and the lateness of both groups
(Job.start_time - due, server clock). Not a test: figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from google.protobuf import timestamp_pb2
from jobwheel.server.model import SECOND, JobState
from jobwheel.server.storage import open_store
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from bench import jobs, procs
from bench.handlers import NOOP
from bench.lateness import percentile
from bench.list_memory import rss_mib
from tests.integration.storage.factories import new_job

BATCH = 5000


def _now() -> int:
    return time.time_ns() // 1000


async def write_jobs(url: str, dues: list[int], label: str) -> None:
    store = await open_store(url)
    try:
        for start in range(0, len(dues), BATCH):
            await store.insert_jobs(
                [
                    new_job(
                        id=str(uuid.uuid4()),
                        task=NOOP,
                        labels={"run": label, "due": str(due)},
                        state=JobState.SCHEDULED,
                        create_time=_now(),
                        next_run_time=due,
                    )
                    for due in dues[start : start + BATCH]
                ]
            )
    finally:
        await store.close()


def lateness_ms(done: list[job_pb2.Job]) -> list[float]:
    return sorted(
        (j.start_time.ToMicroseconds() - due_of(j)) / 1000 for j in done if j.HasField("start_time")
    )


def due_of(job: job_pb2.Job) -> int:
    """The due time (µs): the schedule's, or the label of a job written to the file."""
    if job.schedule.HasField("start_time"):
        return int(job.schedule.start_time.ToMicroseconds())
    return int(job.labels["due"])


def summary(values: list[float]) -> str:
    if not values:
        return "none started"
    return (
        f"{len(values)} started: min {values[0]:.1f} ms, p50 {percentile(values, 50):.1f} ms, "
        f"max {values[-1]:.1f} ms, {sum(v < 0 for v in values)} early"
    )


async def run(db: Path, pending: int, soon: int, workdir: Path) -> None:
    url = f"sqlite:///{db}"
    marker = db.with_suffix(".built")
    if not marker.exists():
        t0 = time.perf_counter()
        first = _now() + 3600 * SECOND
        step = 86_400 * SECOND // max(1, pending)
        await write_jobs(url, [first + i * step for i in range(pending)], "far")
        marker.write_text(str(pending))
        print(f"wrote {pending:,} pending jobs in {time.perf_counter() - t0:.0f} s")
    label = f"stored-{uuid.uuid4().hex[:6]}"
    begin = _now()
    stored_due = [begin + 3 * SECOND + i * SECOND // soon for i in range(soon)]
    await write_jobs(url, stored_due, label)
    srv = procs.jobwheel_server(db, workdir / "pending_restart.log")
    started = time.monotonic()
    with srv:
        async with jobs.channel(srv.address) as ch:
            stub = jobs.stub(ch)
            await jobs.pending(stub)
            answered = time.monotonic() - started
            rss_start = rss_mib(srv.pid)
            api_due = _now() + SECOND
            reqs = []
            for i in range(soon):
                req = jobs.request(NOOP, i)
                due = timestamp_pb2.Timestamp()
                due.FromMicroseconds(api_due + i * SECOND // soon)
                req.schedule.start_time.CopyFrom(due)
                req.labels["run"] = label + "-api"
                reqs.append(req)
            await jobs.enqueue_all(stub, reqs, 1000)
            peak = rss_start
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                peak = max(peak, rss_mib(srv.pid))
                await asyncio.sleep(0.1)
                left = await stub.ListJobs(
                    pb.ListJobsRequest(
                        filter=job_pb2.JobFilter(
                            labels={"run": label},
                            states=[job_pb2.JOB_STATE_SCHEDULED],
                        ),
                        page_size=1,
                    )
                )
                if not left.jobs and time.time_ns() // 1000 > api_due + 2 * SECOND:
                    break
            await asyncio.sleep(0.5)
            stored = await jobs.list_all(stub, job_pb2.JobFilter(labels={"run": label}))
            api = await jobs.list_all(stub, job_pb2.JobFilter(labels={"run": label + "-api"}))
            first_fire = min(
                (j.start_time.ToMicroseconds() for j in stored if j.HasField("start_time")),
                default=None,
            )
    restart_to_fire = (
        "-" if first_fire is None else f"{(first_fire - begin) / SECOND:.2f} s (due at 3.00 s)"
    )
    print(f"pending jobs: {pending:,} (due from an hour ahead, over a day)")
    print(f"answered {answered:.2f} s after the start")
    print(f"server RSS then {rss_start:.0f} MiB, peak {peak:.0f} MiB")
    print(f"stored jobs due 3-4 s after the start: {summary(lateness_ms(stored))}")
    print(f"first of them started {restart_to_fire} after the start")
    print(f"enqueued after the answer, due 1-2 s later: {summary(lateness_ms(api))}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pending_restart")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--soon", type=int, default=20)
    parser.add_argument("--db", type=Path, help="SQLite file, built on first use and kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobwheel-pending-") as tmp:
        workdir = Path(tmp)
        db = args.db or workdir / "pending.db"
        asyncio.run(run(db, args.pending, args.soon, workdir))


if __name__ == "__main__":
    main()
