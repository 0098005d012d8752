"""Bulk actions over many jobs, or big ones: each matching job is acted on once, and a batch
holds a bounded number of bytes however big the jobs are."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

from google.protobuf import duration_pb2, struct_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running

LATER = job_pb2.Schedule(delay=duration_pb2.Duration(seconds=3600))


def _request(
    task: str, queue: str, payload: dict[str, object] | None = None
) -> pb.EnqueueJobRequest:
    body = struct_pb2.Struct()
    body.update(payload or {})
    return pb.EnqueueJobRequest(
        task=task,
        queue=queue,
        payload=body,
        retry_policy=job_pb2.RetryPolicy(max_attempts=1),
    )


async def _counts(server: Running, queue: str) -> dict[int, int]:
    stats = await server.jobs.GetJobStats(
        pb.GetJobStatsRequest(filter=job_pb2.JobFilter(queues=[queue])), timeout=30
    )
    return {s.state: s.count for s in stats.state_counts}


async def _until_all(server: Running, queue: str, state: int, n: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (await _counts(server, queue)).get(state, 0) != n:
        assert time.monotonic() < deadline, await _counts(server, queue)
        await asyncio.sleep(0.2)


async def test_a_bulk_retry_retries_each_job_once(server: Running) -> None:
    # a job retried by one batch can fail again before a later batch of the same call looks
    # for FAILED jobs: it was retried again, and counted again (5,768 for 5,000 jobs)
    n = 5_000
    for _ in range(0, n, 1_000):
        await server.jobs.BatchEnqueueJobs(
            pb.BatchEnqueueJobsRequest(jobs=[_request("test.boom", "bulk")] * 1_000), timeout=60
        )
    await _until_all(server, "bulk", job_pb2.JOB_STATE_FAILED, n, within=60)
    flt = job_pb2.JobFilter(queues=["bulk"], states=[job_pb2.JOB_STATE_FAILED])
    reply = await server.jobs.RetryJobs(pb.RetryJobsRequest(filter=flt), timeout=60)
    assert reply.count == n
    await _until_all(server, "bulk", job_pb2.JOB_STATE_FAILED, n, within=60)
    page = await server.jobs.ListJobs(
        pb.ListJobsRequest(filter=job_pb2.JobFilter(queues=["bulk"]), page_size=1_000)
    )
    assert {job.execution_count for job in page.jobs} == {2}  # the first run and one retry


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_bulk_delete_of_big_jobs_is_bounded_in_memory_and_lock_time(
    server: Running,
) -> None:
    # 160 jobs of 0.9 MiB (144 MiB) were one batch, read whole and logged in one
    # transaction: the server grew by 350-550 MiB and a concurrent EnqueueJob waited for it
    n, blob = 160, "x" * 900_000
    big = _request("test.noop", "big", {"b": blob})
    big.schedule.CopyFrom(LATER)
    for _ in range(0, n, 4):
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=[big] * 4), timeout=60)
    gc.collect()
    base = peak = _rss_mib()
    waits: list[float] = []
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mib())
            await asyncio.sleep(0.005)

    async def enqueue() -> None:
        small = _request("test.noop", "small")
        small.schedule.CopyFrom(LATER)
        while not done.is_set():
            started = time.monotonic()
            await server.jobs.EnqueueJob(small, timeout=60)
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.01)

    beside = [asyncio.create_task(sample()), asyncio.create_task(enqueue())]
    try:
        reply = await server.jobs.DeleteJobs(
            pb.DeleteJobsRequest(filter=job_pb2.JobFilter(queues=["big"])), timeout=60
        )
    finally:
        done.set()
        await asyncio.gather(*beside)
    assert reply.count == n
    assert peak - base < 128, f"the server grew {peak - base:.0f} MiB in one bulk delete"
    assert max(waits) < 3.0, max(waits)  # it waited 6 s for one batch of 144 MiB
    assert await _counts(server, "big") == {}
