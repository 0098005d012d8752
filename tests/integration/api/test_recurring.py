"""Recurring jobs: preview (with DST), reschedule, and misfire policies across a restart."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from jobwheel.server.clock import FakeClock
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running, running_server
from tests.handlers import open_gate
from tests.integration.api.helpers import field_violations
from tests.integration.api.waiting import until


def ts(text: str) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(datetime.fromisoformat(text))
    return out


async def preview(
    server: Running, schedule: j.Schedule, after: str, count: int
) -> list[pb.FireTime]:
    resp = await server.jobs.PreviewSchedule(
        pb.PreviewScheduleRequest(schedule=schedule, after_time=ts(after), count=count)
    )
    return list(resp.fire_times)


def utc(fire: pb.FireTime) -> str:
    return fire.time.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M")


async def test_preview_spring_forward_in_new_york(server: Running) -> None:
    s = j.Schedule(cron="30 2 * * *", time_zone="America/New_York")
    fires = await preview(server, s, "2026-03-07T12:00:00+00:00", 3)
    assert [utc(f) for f in fires] == ["2026-03-08 07:30", "2026-03-09 06:30", "2026-03-10 06:30"]
    assert [f.dst_gap for f in fires] == [True, False, False]
    assert fires[0].local_time == "2026-03-08T03:30:00-04:00"
    s.dst_gap_policy = j.DST_GAP_POLICY_SKIP
    fires = await preview(server, s, "2026-03-07T12:00:00+00:00", 2)
    assert [utc(f) for f in fires] == ["2026-03-09 06:30", "2026-03-10 06:30"]


async def test_preview_fall_back_in_new_york(server: Running) -> None:
    s = j.Schedule(cron="30 1 * * *", time_zone="America/New_York")
    expected = {
        j.DST_FOLD_POLICY_FIRST: ["2026-11-01 05:30", "2026-11-02 06:30"],
        j.DST_FOLD_POLICY_SECOND: ["2026-11-01 06:30", "2026-11-02 06:30"],
        j.DST_FOLD_POLICY_BOTH: ["2026-11-01 05:30", "2026-11-01 06:30", "2026-11-02 06:30"],
    }
    for policy, want in expected.items():
        s.dst_fold_policy = policy
        fires = await preview(server, s, "2026-10-31T12:00:00+00:00", len(want))
        assert [utc(f) for f in fires] == want
        assert fires[0].dst_fold


@pytest.mark.parametrize(
    ("midnight", "fold", "count"),
    [
        ("2026-03-29T00:00:00+00:00", j.DST_FOLD_POLICY_FIRST, 23),  # clocks go forward
        ("2026-10-25T00:00:00+01:00", j.DST_FOLD_POLICY_FIRST, 24),  # 01:00 twice, once
        ("2026-10-25T00:00:00+01:00", j.DST_FOLD_POLICY_BOTH, 25),  # 01:00 twice, both
    ],
)
async def test_hourly_in_london_across_dst(
    server: Running, midnight: str, fold: int, count: int
) -> None:
    s = j.Schedule(cron="0 * * * *", time_zone="Europe/London", dst_fold_policy=fold)  # type: ignore[arg-type]
    just_before = datetime.fromisoformat(midnight).timestamp() - 1
    after = datetime.fromtimestamp(just_before, UTC).isoformat()
    fires = await preview(server, s, after, 30)
    day = midnight[:10]
    on_day = [f for f in fires if f.local_time.startswith(day)]
    assert len(on_day) == count
    times = [f.time.ToMicroseconds() for f in on_day]
    assert times == sorted(set(times))
    hour = 3_600_000_000
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if count == 24:  # FIRST on the fall-back day: the repeated hour is run once
        assert gaps.count(2 * hour) == 1 and gaps.count(hour) == len(gaps) - 1
    else:
        assert set(gaps) == {hour}


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (j.Schedule(cron="61 * * * *"), "schedule.cron"),
        (j.Schedule(cron="* * * * *", time_zone="Nowhere/Land"), "schedule.time_zone"),
        (
            j.Schedule(cron="* * * * *", interval=duration_pb2.Duration(seconds=5)),
            "schedule.interval",
        ),
        (j.Schedule(interval=duration_pb2.Duration(nanos=1000)), "schedule.interval"),
        (j.Schedule(cron="* * * * *", limit=-1), "schedule.limit"),
    ],
)
async def test_preview_bad_schedules(server: Running, schedule: j.Schedule, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.PreviewSchedule(pb.PreviewScheduleRequest(schedule=schedule))
    assert field in field_violations(info.value)


async def test_end_before_start_and_limits(server: Running) -> None:
    start = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    end = timestamp_pb2.Timestamp(seconds=int(time.time()) + 60)
    s = j.Schedule(interval=duration_pb2.Duration(seconds=60), start_time=start, end_time=end)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t", schedule=s))
    assert "schedule.end_time" in field_violations(info.value)
    limited = j.Schedule(interval=duration_pb2.Duration(seconds=60), limit=3)
    fires = (
        await server.jobs.PreviewSchedule(pb.PreviewScheduleRequest(schedule=limited))
    ).fire_times
    assert len(fires) == 3


async def test_reschedule(server: Running) -> None:
    later = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="nobody", schedule=j.Schedule(start_time=later))
        )
    ).job
    much_later = timestamp_pb2.Timestamp(seconds=int(time.time()) + 7200)
    moved = (
        await server.jobs.RescheduleJob(
            pb.RescheduleJobRequest(id=job.id, schedule=j.Schedule(start_time=much_later))
        )
    ).job
    assert moved.next_run_time.seconds == much_later.seconds
    daily = j.Schedule(cron="0 10 * * *", time_zone="America/New_York")
    recurring = (
        await server.jobs.RescheduleJob(pb.RescheduleJobRequest(id=job.id, schedule=daily))
    ).job
    assert recurring.recurring and recurring.schedule.cron == "0 10 * * *"
    assert recurring.next_run_time.ToDatetime().hour in (14, 15)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.RescheduleJob(pb.RescheduleJobRequest(id=job.id))
    assert "schedule" in field_violations(info.value)
    await server.jobs.CancelJob(pb.CancelJobRequest(id=job.id))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.RescheduleJob(pb.RescheduleJobRequest(id=job.id, schedule=daily))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "policy", [j.MISFIRE_POLICY_SKIP, j.MISFIRE_POLICY_RUN_ONCE, j.MISFIRE_POLICY_RUN_ALL]
)
async def test_misfire_policy_across_a_restart(db_url: str, policy: int) -> None:
    # on a FakeClock: occurrences at s0, s0+2, s0+4, s0+6, ...; down from just after s0 to
    # s0+4.5, so s0+2 and s0+4 are missed (by more than the 0.3 s grace); the clock stays at
    # s0+4.5 while the restarted server catches up, so s0+6 never comes due
    clock = FakeClock(time.time_ns() // 1000)
    s0 = clock.now() + 500_000
    start = timestamp_pb2.Timestamp()
    start.FromMicroseconds(s0)
    schedule = j.Schedule(
        start_time=start,
        interval=duration_pb2.Duration(seconds=2),
        misfire_policy=policy,  # type: ignore[arg-type]
    )
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        req = pb.EnqueueJobRequest(task="test.echo", schedule=schedule)
        job = (await server.jobs.EnqueueJob(req)).job
        clock.advance(500_000)
        await until_state(server, job.id, (1, 0))
    clock.advance(4_500_000)
    expected = {
        j.MISFIRE_POLICY_SKIP: (0, 2),
        j.MISFIRE_POLICY_RUN_ONCE: (1, 1),
        j.MISFIRE_POLICY_RUN_ALL: (2, 0),
    }[policy]  # type: ignore[index]
    async with running_server(db_url, clock, misfire_grace=0.3) as server:
        done = await until_state(server, job.id, (1 + expected[0], expected[1]))
        assert done.next_run_time.ToMicroseconds() == s0 + 6_000_000
        history = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
        numbers = [a.execution for a in history.attempts]
        assert numbers == list(range(1, 2 + expected[0]))  # one attempt per execution
        assert all(a.start_time.ToMicroseconds() == s0 + 4_500_000 for a in history.attempts[1:])


async def until_state(
    server: Running, job_id: str, counts: tuple[int, int], state: int = j.JOB_STATE_SCHEDULED
) -> j.Job:
    """The job once it is in `state` with (execution_count, skipped_count) == `counts`."""
    got = j.Job()

    async def check() -> bool:
        nonlocal got
        got = (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job
        now = (got.execution_count, got.skipped_count)
        return now == counts and got.state == state

    await until(server, check)
    return got


async def test_interval_without_start_time_runs_start_to_start(db_url: str) -> None:
    """A 0.3 s run of an every-1 s job (on a FakeClock): occurrences stay on the grid of the
    first one."""
    clock = FakeClock(time.time_ns() // 1000)
    gate = uuid.uuid4().hex
    async with running_server(db_url, clock) as server:
        req = pb.EnqueueJobRequest(
            task="test.gate",
            schedule=j.Schedule(interval=duration_pb2.Duration(seconds=1), limit=3),
        )
        req.payload.update({"gate": gate})
        job = (await server.jobs.EnqueueJob(req)).job
        assert not job.schedule.HasField("start_time")  # the anchor is internal
        first = job.next_run_time.ToMicroseconds()
        assert first == job.create_time.ToMicroseconds() + 1_000_000
        clock.advance(1_000_000)
        await until_state(server, job.id, (1, 0), j.JOB_STATE_RUNNING)
        clock.advance(300_000)  # the run takes 0.3 s
        open_gate(gate)
        waiting = await until_state(server, job.id, (1, 0))
        # every occurrence is exactly first + k s: a run's length never shifts the next one
        assert waiting.next_run_time.ToMicroseconds() == first + 1_000_000
        clock.advance(700_000)  # the gate stays open: the later runs end at once
        waiting = await until_state(server, job.id, (2, 0))
        assert waiting.next_run_time.ToMicroseconds() == first + 2_000_000
        clock.advance(1_000_000)
        await until_state(server, job.id, (3, 0), j.JOB_STATE_COMPLETED)
        history = await server.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
        starts = [a.start_time.ToMicroseconds() for a in history.attempts]
        assert starts == [first + k * 1_000_000 for k in range(3)]
