"""Overlap policies: an occurrence comes due while the previous execution still runs.

On a FakeClock: an every-1 s schedule starting at T0+0.3 s, whose first execution runs until
the test opens its gate, so each case sets exactly when what happens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from jobwheel.server.clock import FakeClock
from jobwheel.server.model import SECOND
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running, running_server
from tests.handlers import open_gate
from tests.integration.api.waiting import until

MS = SECOND // 1000
T0 = time.time_ns() // 1000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def server(db_url: str, clock: FakeClock) -> AsyncIterator[Running]:
    async with running_server(db_url, clock) as running:
        yield running


async def recurring(server: Running, task: str, policy: int, **payload: object) -> j.Job:
    start = timestamp_pb2.Timestamp()
    start.FromMicroseconds(T0 + 300 * MS)
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


async def get(server: Running, job_id: str) -> j.Job:
    return (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job


async def state(server: Running, job_id: str, want: int, executions: int) -> None:
    async def check() -> bool:
        job = await get(server, job_id)
        return job.state == want and job.execution_count == executions

    await until(server, check)


def gate() -> str:
    return uuid.uuid4().hex


async def test_skip_drops_what_came_due_during_a_run(server: Running, clock: FakeClock) -> None:
    name = gate()
    job = await recurring(server, "test.gate", j.OVERLAP_POLICY_SKIP, gate=name)
    clock.advance(300 * MS)
    await started(server, job.id, 1)  # at 0.3
    clock.advance(1500 * MS)  # the occurrence at 1.3 comes due while it runs
    open_gate(name)  # ends at 1.8
    await state(server, job.id, j.JOB_STATE_SCHEDULED, 1)
    waiting = await get(server, job.id)
    assert waiting.skipped_count == 1
    assert waiting.next_run_time.ToMicroseconds() == T0 + 2300 * MS
    assert len(await attempts(server, job.id)) == 1  # nothing started when the run ended
    clock.advance(500 * MS)
    await started(server, job.id, 2)
    first, second = (await attempts(server, job.id))[:2]
    assert first.end_time.ToMicroseconds() == T0 + 1800 * MS
    # the second run waited for the next occurrence instead of starting when the first ended
    assert second.start_time.ToMicroseconds() == T0 + 2300 * MS


async def test_buffer_one_runs_the_missed_one_at_once(server: Running, clock: FakeClock) -> None:
    name = gate()
    job = await recurring(server, "test.gate", j.OVERLAP_POLICY_BUFFER_ONE, gate=name)
    clock.advance(300 * MS)
    await started(server, job.id, 1)
    clock.advance(1500 * MS)  # 1.3 comes due during the run: kept for its end
    open_gate(name)
    await started(server, job.id, 2)
    first, second = (await attempts(server, job.id))[:2]
    assert first.end_time.ToMicroseconds() == T0 + 1800 * MS
    assert second.start_time.ToMicroseconds() == T0 + 1800 * MS
    assert (await get(server, job.id)).skipped_count == 0


async def test_cancel_other_cuts_the_running_execution_short(
    server: Running, clock: FakeClock
) -> None:
    job = await recurring(server, "test.hang", j.OVERLAP_POLICY_CANCEL_OTHER)
    clock.advance(300 * MS)
    await started(server, job.id, 1)
    clock.advance(999 * MS)
    assert len(await attempts(server, job.id)) == 1  # never early
    clock.advance(1 * MS)  # 1.3: the occurrence cancels the running execution
    await started(server, job.id, 2)
    history = await attempts(server, job.id)
    assert history[0].outcome == j.ATTEMPT_OUTCOME_CANCELLED
    assert history[0].end_time.ToMicroseconds() == T0 + 1300 * MS
    assert history[1].execution == 2
    assert history[1].start_time.ToMicroseconds() == T0 + 1300 * MS


async def test_allow_all_starts_the_occurrence_alongside(server: Running, clock: FakeClock) -> None:
    name = gate()
    job = await recurring(server, "test.gate", j.OVERLAP_POLICY_ALLOW_ALL, gate=name)
    clock.advance(300 * MS)
    await started(server, job.id, 1)
    children: list[j.Job] = []

    async def child_started() -> bool:
        nonlocal children
        flt = j.JobFilter(labels={"jobwheel.parent": job.id})
        children = list((await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))).jobs)
        return bool(children) and children[-1].HasField("start_time")

    clock.advance(1000 * MS)
    await until(server, child_started)
    [child] = children  # the occurrence at 1.3, started while the parent still runs
    assert child.start_time.ToMicroseconds() == T0 + 1300 * MS
    [parent_first] = await attempts(server, job.id)
    assert not parent_first.HasField("end_time")
    assert (await get(server, job.id)).skipped_count == 0
    open_gate(name)


async def test_buffer_one_keeps_an_occurrence_older_than_the_misfire_grace(
    db_url: str, clock: FakeClock
) -> None:
    # the occurrence kept for the end of a run longer than the misfire grace is no misfire
    # (nothing was down or paused): misfire SKIP dropped it as the run ended
    name = gate()
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        start = timestamp_pb2.Timestamp()
        start.FromMicroseconds(T0 + 300 * MS)
        req = pb.EnqueueJobRequest(
            task="test.gate",
            schedule=j.Schedule(
                start_time=start,
                interval=duration_pb2.Duration(seconds=1),
                overlap_policy=j.OVERLAP_POLICY_BUFFER_ONE,
                misfire_policy=j.MISFIRE_POLICY_SKIP,
            ),
        )
        req.payload.update({"gate": name})
        job = (await server.jobs.EnqueueJob(req)).job
        clock.advance(300 * MS)
        await started(server, job.id, 1)
        clock.advance(1500 * MS)  # 1.3 comes due during the run; at its end 0.5 s old
        open_gate(name)
        await started(server, job.id, 2)
        second = (await attempts(server, job.id))[1]
        assert (second.execution, second.start_time.ToMicroseconds()) == (2, T0 + 1800 * MS)
        assert (await get(server, job.id)).skipped_count == 0
