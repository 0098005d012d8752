"""Scheduling and management at their edges, through the public API: cron across DST days
fired by the engine (FakeClock), misfire after pause/resume, same-instant ordering, ListJobs
paging with identical timestamps, payload filters on keys the stored JSON escapes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from jobwheel.server.clock import FakeClock
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running, running_server
from tests.integration.api.waiting import until, until_job

SECOND = 1_000_000


def _us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * SECOND)


def _ts(us: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMicroseconds(us)
    return out


async def _get(server: Running, job_id: str) -> j.Job:
    job: j.Job = (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job
    return job


async def _settle(server: Running, rounds: int = 3) -> None:
    """Give the engine a few dispatch cycles (or half-seconds) to act on a clock move."""
    for _ in range(rounds):
        await asyncio.sleep(0.15)


async def _attempts(server: Running, job_id: str) -> list[j.Attempt]:
    resp = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
    return list(resp.attempts)


# --- cron across DST days, fired by the engine ------------------------------------------


@pytest.mark.parametrize(
    ("zone", "before", "first_fire", "second_wall", "next_day"),
    [
        # fall back: 02:30 exists twice in Berlin (00:30Z CEST and 01:30Z CET)
        (
            "Europe/Berlin",
            "2026-10-24T23:00:00+00:00",
            "2026-10-25T00:30:00+00:00",
            "2026-10-25T01:30:00+00:00",
            "2026-10-26T01:30:00+00:00",
        ),
        # fall back in New York: 01:30 exists twice (05:30Z EDT and 06:30Z EST)
        (
            "America/New_York",
            "2026-11-01T04:00:00+00:00",
            "2026-11-01T05:30:00+00:00",
            "2026-11-01T06:30:00+00:00",
            "2026-11-02T06:30:00+00:00",
        ),
    ],
)
async def test_daily_cron_on_fall_back_day_fires_once(
    db_url: str, zone: str, before: str, first_fire: str, second_wall: str, next_day: str
) -> None:
    # DST_FOLD_POLICY_FIRST (default): "Run once, at the first occurrence".
    cron = "30 2 * * *" if zone == "Europe/Berlin" else "30 1 * * *"
    clock = FakeClock(_us(before))
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        job = (
            await server.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="test.echo", schedule=j.Schedule(cron=cron, time_zone=zone)
                )
            )
        ).job
        assert job.next_run_time.ToMicroseconds() == _us(first_fire)
        clock.advance(_us(first_fire) - clock.now())
        done = await until_job(
            server, job.id, lambda g: g.execution_count == 1 and g.state == j.JOB_STATE_SCHEDULED
        )
        assert done.next_run_time.ToMicroseconds() == _us(next_day)
        clock.advance(_us(second_wall) - clock.now() + SECOND)  # the repeated wall time passes
        await _settle(server)
        again = await _get(server, job.id)
        assert again.execution_count == 1
        assert len(await _attempts(server, job.id)) == 1


async def test_daily_0230_on_spring_forward_day_fires_once_shifted(db_url: str) -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: SHIFT_FORWARD runs it at 03:30 CEST
    # (01:30Z), once; the next is 02:30 CEST on the 30th (00:30Z).
    clock = FakeClock(_us("2026-03-28T23:00:00+00:00"))
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        sched = j.Schedule(cron="30 2 * * *", time_zone="Europe/Berlin")
        job = (
            await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo", schedule=sched))
        ).job
        assert job.next_run_time.ToMicroseconds() == _us("2026-03-29T01:30:00+00:00")
        clock.advance(_us("2026-03-29T01:30:00+00:00") - clock.now())
        done = await until_job(
            server, job.id, lambda g: g.execution_count == 1 and g.state == j.JOB_STATE_SCHEDULED
        )
        assert done.next_run_time.ToMicroseconds() == _us("2026-03-30T00:30:00+00:00")
        skip = j.Schedule(
            cron="30 2 * * *", time_zone="Europe/Berlin", dst_gap_policy=j.DST_GAP_POLICY_SKIP
        )
        other = (
            await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo", schedule=skip))
        ).job
        # enqueued at 01:30Z on the 29th: the skipped day is behind, next is the 30th
        assert other.next_run_time.ToMicroseconds() == _us("2026-03-30T00:30:00+00:00")


# --- misfire after pause / resume ---------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "runs", "skipped"),
    [
        (j.MISFIRE_POLICY_SKIP, 0, 10),
        (j.MISFIRE_POLICY_RUN_ONCE, 1, 9),
        (j.MISFIRE_POLICY_RUN_ALL, 10, 0),
    ],
)
async def test_misfire_policy_after_pause_and_resume(
    db_url: str, policy: int, runs: int, skipped: int
) -> None:
    # MisfirePolicy: "occurrences that were missed while ... the job was paused". Every 10 s
    # from s0; paused after the first run; resumed at s0 + 105 s: s0+10 .. s0+100 missed (10).
    clock = FakeClock(_us("2026-06-01T00:00:00+00:00"))
    s0 = clock.now() + SECOND
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        sched = j.Schedule(
            start_time=_ts(s0),
            interval=duration_pb2.Duration(seconds=10),
            misfire_policy=policy,  # type: ignore[arg-type]
            overlap_policy=j.OVERLAP_POLICY_BUFFER_ONE,
        )
        job = (
            await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo", schedule=sched))
        ).job
        clock.advance(SECOND)
        await until_job(
            server, job.id, lambda g: g.execution_count == 1 and g.state == j.JOB_STATE_SCHEDULED
        )
        paused = (await server.jobs.PauseJob(pb.PauseJobRequest(id=job.id))).job
        assert paused.state == j.JOB_STATE_PAUSED
        clock.advance(105 * SECOND)
        await _settle(server)
        assert (await _get(server, job.id)).execution_count == 1  # paused: nothing ran
        await server.jobs.ResumeJob(pb.ResumeJobRequest(id=job.id))
        done = await until_job(
            server,
            job.id,
            lambda g: (
                g.state == j.JOB_STATE_SCHEDULED and g.next_run_time.ToMicroseconds() > clock.now()
            ),
        )
        await _settle(server)
        done = await _get(server, job.id)
        assert (done.execution_count - 1, done.skipped_count) == (runs, skipped)
        assert done.next_run_time.ToMicroseconds() == s0 + 110 * SECOND


# --- same-instant ordering, far times -------------------------------------------------------


async def test_jobs_due_at_the_same_instant_lease_by_priority_then_fifo(db_url: str) -> None:
    # Job.priority: "Higher runs first among jobs due in the same queue; equal priorities run
    # in FIFO order."
    clock = FakeClock(_us("2026-06-01T00:00:00+00:00"))
    at = clock.now() + 5 * SECOND
    task = f"remote.{uuid.uuid4().hex[:8]}"
    async with running_server(db_url, clock) as server:
        prios = [0, 5, 0, 5, -1, 0]
        ids = []
        for p in prios:
            req = pb.EnqueueJobRequest(
                task=task, priority=p, schedule=j.Schedule(start_time=_ts(at))
            )
            ids.append((await server.jobs.EnqueueJob(req)).job.id)
        clock.advance(5 * SECOND)

        async def all_queued() -> bool:
            got = await server.jobs.ListJobs(
                pb.ListJobsRequest(filter=j.JobFilter(tasks=[task], states=[j.JOB_STATE_QUEUED]))
            )
            return len(got.jobs) == len(ids)

        await until(server, all_queued)
        leased = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="w1", tasks=[task], max_jobs=10)
        )
        order = [lease.job.id for lease in leased.leases]
        want = [ids[1], ids[3], ids[0], ids[2], ids[5], ids[4]]
        assert order == want


async def test_far_future_and_nanos_start_times(server: Running) -> None:
    far = _us("9999-12-29T23:59:59+00:00")
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="test.echo", schedule=j.Schedule(start_time=_ts(far)))
        )
    ).job
    assert job.state == j.JOB_STATE_SCHEDULED and job.next_run_time.ToMicroseconds() == far
    got = await server.jobs.ListJobs(
        pb.ListJobsRequest(
            filter=j.JobFilter(
                next_run_time=j.TimeRange(start_time=_ts(far), end_time=_ts(far + 1))
            )
        )
    )
    assert [g.id for g in got.jobs] == [job.id]
    for bad in ("9999-12-30T00:00:00+00:00", "0001-01-01T00:00:00+00:00"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await server.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="test.echo", schedule=j.Schedule(start_time=_ts(_us(bad)))
                )
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # a yearly cron whose next new year lies past the computed range has ended at once
    ny = j.Schedule(
        cron="@yearly",
        time_zone="Pacific/Kiritimati",
        start_time=_ts(_us("9999-06-01T00:00:00+00:00")),
    )
    resp = await server.jobs.PreviewSchedule(pb.PreviewScheduleRequest(schedule=ny, count=3))
    assert list(resp.fire_times) == []


# --- ListJobs pagination with identical timestamps ----------------------------------------


@pytest.mark.parametrize("order", [pb.JOB_ORDER_CREATE_TIME_DESC, pb.JOB_ORDER_CREATE_TIME_ASC])
async def test_pages_with_identical_create_times_while_jobs_arrive(db_url: str, order: int) -> None:
    # a FakeClock that never moves: every job has the same create_time
    clock = FakeClock(_us("2026-06-01T00:00:00+00:00"))
    async with running_server(db_url, clock) as server:
        reqs = [pb.EnqueueJobRequest(task="t.same") for _ in range(60)]
        first = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
        before = {r.job.id for r in first.results}
        stop = asyncio.Event()

        async def arrive() -> None:
            while not stop.is_set():
                await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t.same"))
                await asyncio.sleep(0)

        arriving = asyncio.create_task(arrive())
        seen: list[str] = []
        req = pb.ListJobsRequest(page_size=7, order=order)  # type: ignore[arg-type]
        try:
            while True:
                resp = await server.jobs.ListJobs(req)
                seen.extend(g.id for g in resp.jobs)
                if not resp.next_page_token:
                    break
                req.page_token = resp.next_page_token
        finally:
            stop.set()
            await arriving
        assert len(seen) == len(set(seen)), "a job listed twice"
        assert before <= set(seen), f"{len(before - set(seen))} jobs skipped"


async def test_page_token_from_another_server_is_refused_or_harmless(tmp_path: Path) -> None:
    async with running_server(f"sqlite:///{tmp_path / 'a.db'}") as a:
        reqs = [pb.EnqueueJobRequest(task="t") for _ in range(5)]
        await a.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
        token = (await a.jobs.ListJobs(pb.ListJobsRequest(page_size=2))).next_page_token
        assert token
    async with running_server(f"sqlite:///{tmp_path / 'b.db'}") as b:
        try:
            resp = await b.jobs.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token))
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert list(resp.jobs) == []


# --- management at the edges ---------------------------------------------------------------


async def test_attempts_of_a_deleted_job_are_not_found(server: Running) -> None:
    job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))).job
    await until_job(server, job.id, lambda g: g.state == j.JOB_STATE_COMPLETED)
    assert len(await _attempts(server, job.id)) == 1
    await server.jobs.DeleteJob(pb.DeleteJobRequest(id=job.id))
    for call in (
        server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id)),
        server.jobs.GetJob(pb.GetJobRequest(id=job.id)),
        server.jobs.DeleteJob(pb.DeleteJobRequest(id=job.id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bulk_with_unicode_long_filters_and_queue_counts_after_deletes(
    server: Running,
) -> None:
    value = "ü漢🙂" * 85 + "x"  # 256 characters, many of them outside the BMP
    assert len(value) == 256
    q = f"rq.{uuid.uuid4().hex[:8]}"
    later = _ts(_us("2030-01-01T00:00:00+00:00"))
    reqs = [
        pb.EnqueueJobRequest(
            task="t", queue=q, labels={"k": value}, schedule=j.Schedule(start_time=later)
        )
        for _ in range(3)
    ] + [pb.EnqueueJobRequest(task="t", queue=q, schedule=j.Schedule(start_time=later))]
    await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    flt = j.JobFilter(labels={"k": value})
    listed = await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))
    assert len(listed.jobs) == 3
    nothing = j.JobFilter(labels={"k": value[:-1] + "y"})
    assert (await server.jobs.CancelJobs(pb.CancelJobsRequest(filter=nothing))).count == 0
    assert (await server.jobs.RetryJobs(pb.RetryJobsRequest(filter=nothing))).count == 0
    assert (await server.jobs.DeleteJobs(pb.DeleteJobsRequest(filter=nothing))).count == 0
    assert (await server.jobs.CancelJobs(pb.CancelJobsRequest(filter=flt))).count == 3
    assert (await server.jobs.RetryJobs(pb.RetryJobsRequest(filter=flt))).count == 3
    assert (await server.jobs.DeleteJobs(pb.DeleteJobsRequest(filter=flt))).count == 3

    async def queue(name: str) -> j.Queue | None:
        resp = await server.jobs.ListQueues(pb.ListQueuesRequest())
        return next((x for x in resp.queues if x.name == name), None)

    got = await queue(q)
    assert got is not None
    assert {c.state: c.count for c in got.state_counts if c.count} == {j.JOB_STATE_SCHEDULED: 1}
    stats = await server.jobs.GetJobStats(pb.GetJobStatsRequest(filter=j.JobFilter(queues=[q])))
    assert stats.total == 1
    assert (
        await server.jobs.DeleteJobs(pb.DeleteJobsRequest(filter=j.JobFilter(queues=[q])))
    ).count == 1
    assert await queue(q) is None  # no settings and no jobs: not a known queue any more


async def test_bulk_retry_with_a_filter_matching_everything_needs_all(server: Running) -> None:
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="test.boom", retry_policy=j.RetryPolicy(max_attempts=1))
        )
    ).job
    await until_job(server, job.id, lambda g: g.state == j.JOB_STATE_FAILED)
    every_state = j.JobFilter(
        states=[j.JobState.Name(s) for s in j.JobState.values() if s != j.JOB_STATE_UNSPECIFIED]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.RetryJobs(pb.RetryJobsRequest(filter=every_state))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        await server.jobs.RetryJobs(pb.RetryJobsRequest(filter=every_state, all=True))
    ).count == 1


async def test_list_page_token_reused_with_another_order_is_refused(server: Running) -> None:
    reqs = [pb.EnqueueJobRequest(task="t") for _ in range(5)]
    await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    token = (await server.jobs.ListJobs(pb.ListJobsRequest(page_size=2))).next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.ListJobs(
            pb.ListJobsRequest(page_size=2, page_token=token, order=pb.JOB_ORDER_CREATE_TIME_ASC)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "key", ["a\\b", "C:\\temp", "\\", "a.b", 'a"b', "ü漢🙂", "tab\there", "line\nbreak", "\x01"]
)
async def test_payload_filter_matches_keys_with_special_characters(
    server: Running, key: str
) -> None:
    # JobFilter.payload: "Top-level payload fields that must all be present with exactly these
    # values". A key is any JSON object key: on SQLite, one the stored text escapes (a
    # backslash, a control character) matched nothing through a JSON path label, and the bulk
    # RPCs with that filter acted on nothing.
    payload = struct_pb2.Struct()
    payload.update({key: "v", "other": 1})
    later = j.Schedule(delay=duration_pb2.Duration(seconds=3600))
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="t", payload=payload, schedule=later)
        )
    ).job
    flt_payload = struct_pb2.Struct()
    flt_payload.update({key: "v"})
    flt = j.JobFilter(payload=flt_payload)
    listed = await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))
    assert [g.id for g in listed.jobs] == [job.id]
    assert (await server.jobs.GetJobStats(pb.GetJobStatsRequest(filter=flt))).total == 1
    assert (await server.jobs.CancelJobs(pb.CancelJobsRequest(filter=flt))).count == 1
