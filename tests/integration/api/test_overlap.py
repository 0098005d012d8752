"""Overlap policies: an occurrence comes due while the previous execution still runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.api.waiting import until


async def recurring(server: Running, task: str, policy: int, **payload: object) -> j.Job:
    start = timestamp_pb2.Timestamp()
    start.FromNanoseconds(int((time.time() + 0.3) * 1e9))
    req = pb.EnqueueJobRequest(
        task=task,
        schedule=j.Schedule(
            start_time=start,
            interval=duration_pb2.Duration(seconds=1),
            overlap_policy=policy,  # type: ignore[arg-type]
        ),
    )
    req.payload.update(payload)
    return (await server.jobs.EnqueueJob(req)).job


async def attempts(server: Running, job_id: str) -> list[j.Attempt]:
    resp = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
    return list(resp.attempts)


async def started(server: Running, job_id: str, n: int) -> None:
    """Waits until `n` attempts of the job started."""

    async def check() -> bool:
        return len(await attempts(server, job_id)) >= n

    await until(server, check)


async def test_skip_drops_what_came_due_during_a_run(server: Running) -> None:
    job = await recurring(server, "test.block", j.OVERLAP_POLICY_SKIP, seconds=1.5)
    await started(server, job.id, 2)  # runs 0.3-1.8 (misses 1.3), runs again at 2.3
    got = (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.skipped_count >= 1
    history = await attempts(server, job.id)
    assert len(history) >= 2
    first, second = history[0], history[1]
    # the second run waited for the next occurrence instead of starting when the first ended
    assert second.start_time.ToMicroseconds() - first.end_time.ToMicroseconds() >= 200_000


async def test_buffer_one_runs_the_missed_one_at_once(server: Running) -> None:
    job = await recurring(server, "test.block", j.OVERLAP_POLICY_BUFFER_ONE, seconds=1.5)
    await started(server, job.id, 2)
    history = await attempts(server, job.id)
    assert len(history) >= 2
    first, second = history[0], history[1]
    assert second.start_time.ToMicroseconds() - first.end_time.ToMicroseconds() < 400_000


async def test_cancel_other_cuts_the_running_execution_short(server: Running) -> None:
    job = await recurring(server, "test.hang", j.OVERLAP_POLICY_CANCEL_OTHER)
    await started(server, job.id, 2)  # starts at 0.3, the next occurrence at 1.3 cancels it
    history = await attempts(server, job.id)
    assert len(history) >= 2
    assert history[0].outcome == j.ATTEMPT_OUTCOME_CANCELLED
    assert history[1].execution == 2
    gap = history[1].start_time.ToMicroseconds() - history[0].end_time.ToMicroseconds()
    assert gap < 400_000


async def test_allow_all_starts_the_occurrence_alongside(server: Running) -> None:
    job = await recurring(server, "test.block", j.OVERLAP_POLICY_ALLOW_ALL, seconds=1.5)
    children: list[j.Job] = []

    async def child_started() -> bool:
        nonlocal children
        flt = j.JobFilter(labels={"jobwheel.parent": job.id})
        children = list((await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))).jobs)
        return bool(children) and children[-1].HasField("start_time")

    await until(server, child_started)
    [parent_first] = (await attempts(server, job.id))[:1]
    child = children[-1]  # the oldest child: the occurrence at 1.3
    assert child.HasField("start_time")
    # it started while the parent's first execution was still running
    assert child.start_time.ToMicroseconds() < (
        parent_first.end_time.ToMicroseconds() if parent_first.HasField("end_time") else 2**62
    )
    got = (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.skipped_count == 0


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Timing-based tests: run once, on the embedded default (overrides the shared fixture)."""
    return f"sqlite:///{tmp_path / 'jobwheel.db'}"
