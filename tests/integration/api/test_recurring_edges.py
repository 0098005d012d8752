"""Recurring jobs at their edges (FakeClock): more missed occurrences than are listed one by
one (10,000) after an outage, each misfire policy; a reschedule of a job waiting to retry."""

from __future__ import annotations

import time

from google.protobuf import duration_pb2, timestamp_pb2
from jobwheel.server.clock import FakeClock
from jobwheel.server.model import SECOND
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running, running_server
from tests.integration.api.waiting import until_job

MS = SECOND // 1000


def _ts(us: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMicroseconds(us)
    return out


async def _get(server: Running, job_id: str) -> j.Job:
    return (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job


async def _attempts(server: Running, job_id: str) -> list[j.Attempt]:
    resp = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
    return list(resp.attempts)


async def _run_first_then_restart_after(
    db_url: str, schedule: j.Schedule, clock: FakeClock, s0: int, down: int
) -> str:
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        req = pb.EnqueueJobRequest(task="test.echo", schedule=schedule)
        job = (await server.jobs.EnqueueJob(req)).job
        clock.advance(s0 - clock.now())
        await until_job(
            server, job.id, lambda g: g.execution_count == 1 and g.state == j.JOB_STATE_SCHEDULED
        )
    clock.advance(down)
    return job.id


async def test_misfire_skip_counts_every_missed_occurrence(db_url: str) -> None:
    # proto Job.skipped_count: "Occurrences of a recurring job skipped by its misfire or
    # overlap policy"; MISFIRE_POLICY_SKIP: "Run none of the missed occurrences".
    clock = FakeClock(time.time_ns() // 1000)
    s0 = clock.now() + 500 * MS
    schedule = j.Schedule(
        start_time=_ts(s0),
        interval=duration_pb2.Duration(seconds=1),
        misfire_policy=j.MISFIRE_POLICY_SKIP,
    )
    job_id = await _run_first_then_restart_after(
        db_url, schedule, clock, s0, 12_000 * SECOND + 200 * MS
    )
    # down from s0 to s0 + 12000.2: occurrences s0+1 .. s0+12000 were missed (12000)
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        done = await until_job(
            server, job_id, lambda g: g.next_run_time.ToMicroseconds() > clock.now()
        )
        assert done.execution_count == 1
        assert done.next_run_time.ToMicroseconds() == s0 + 12_001 * SECOND
        assert done.skipped_count == 12_000


async def test_misfire_run_once_runs_once_after_a_long_outage(db_url: str) -> None:
    # proto MISFIRE_POLICY_RUN_ONCE: "Run one execution for all missed occurrences (coalesce),
    # then continue."
    clock = FakeClock(time.time_ns() // 1000)
    s0 = clock.now() + 500 * MS
    schedule = j.Schedule(
        start_time=_ts(s0),
        interval=duration_pb2.Duration(seconds=1),
        misfire_policy=j.MISFIRE_POLICY_RUN_ONCE,
        overlap_policy=j.OVERLAP_POLICY_BUFFER_ONE,
    )
    job_id = await _run_first_then_restart_after(
        db_url, schedule, clock, s0, 12_000 * SECOND + 200 * MS
    )
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        done = await until_job(
            server,
            job_id,
            lambda g: (
                g.state == j.JOB_STATE_SCHEDULED and g.next_run_time.ToMicroseconds() > clock.now()
            ),
        )
        history = await _attempts(server, job_id)
        assert done.execution_count == 2, f"{done.execution_count - 1} runs for one outage"
        assert len(history) == 2
        assert done.skipped_count == 11_999
        assert done.next_run_time.ToMicroseconds() == s0 + 12_001 * SECOND


async def test_reschedule_of_a_retrying_recurring_job_starts_a_new_execution(db_url: str) -> None:
    # proto Job.execution_count: "a recurring job has one per occurrence"; Job.attempt: "The
    # current ... attempt number within the current execution". RescheduleJob "Replaces the
    # job's whole schedule": the new schedule's first occurrence is a new execution.
    clock = FakeClock(time.time_ns() // 1000)
    t0 = clock.now()
    async with running_server(db_url, clock) as server:
        req = pb.EnqueueJobRequest(
            task="test.boom",
            schedule=j.Schedule(
                start_time=_ts(t0 + 300 * MS), interval=duration_pb2.Duration(seconds=3600)
            ),
            retry_policy=j.RetryPolicy(
                max_attempts=2,
                initial_backoff=duration_pb2.Duration(seconds=600),
                max_backoff=duration_pb2.Duration(seconds=600),
            ),
        )
        job = (await server.jobs.EnqueueJob(req)).job
        clock.advance(300 * MS)
        await until_job(server, job.id, lambda g: g.state == j.JOB_STATE_RETRYING)
        new = j.Schedule(start_time=_ts(t0 + SECOND), interval=duration_pb2.Duration(seconds=3600))
        await server.jobs.RescheduleJob(pb.RescheduleJobRequest(id=job.id, schedule=new))
        clock.advance(700 * MS)
        done = await until_job(
            server,
            job.id,
            lambda g: (
                (
                    g.state == j.JOB_STATE_SCHEDULED
                    and g.next_run_time.ToMicroseconds() > t0 + 2 * SECOND
                )
                or (
                    g.state == j.JOB_STATE_RETRYING and len(g.last_error) and g.execution_count >= 2
                )
            ),
        )
        history = await _attempts(server, job.id)
        assert [(a.execution, a.number) for a in history] == [(1, 1), (2, 1)]
        assert done.execution_count == 2
