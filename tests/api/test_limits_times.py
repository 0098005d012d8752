"""Times: every Timestamp and Duration field at its limit, one past it, and garbage.

No time outside google.protobuf.Timestamp (years 1 to 9999) is accepted, computed or stored;
schedules compute their occurrences between 0001-01-03 and 9999-12-30 (proto: Schedule).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from jobwheel.v1 import job_pb2, worker_service_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.api.limits_helpers import (
    DAY,
    INVALID,
    NOT_FOUND,
    OK,
    Row,
    at,
    check_rows,
    raw_ts,
    secs,
)
from tests.conftest import Running

TS_MAX = 253_402_300_799
TS_MIN = -62_135_596_800
LATEST = 253_402_128_000  # 9999-12-30T00:00:00Z
Call = Callable[[], Awaitable[Any]]
UNKNOWN_ID = "01234567-89ab-7def-8123-456789abcdef"


def enqueue(server: Running, **fields: Any) -> Call:
    return lambda: server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t", **fields))


async def test_schedule_times(server: Running) -> None:
    now = int(time.time())

    def sched(**fields: Any) -> Call:
        return enqueue(server, schedule=job_pb2.Schedule(**fields))

    cron = {"cron": "0 0 1 1 *"}
    await check_rows(
        [
            Row("delay to just before the end", sched(delay=secs(LATEST - now - DAY)), OK),
            Row(
                "delay past the end",
                sched(delay=secs(LATEST - now + 10)),
                INVALID,
                "schedule.delay",
            ),
            Row(
                "delay of 10,000 years",
                sched(delay=secs(315_360_000_000)),
                INVALID,
                "schedule.delay",
            ),
            Row("delay of 2^62 s", sched(delay=secs(2**62)), INVALID, "schedule.delay"),
            Row(
                "delay, nanos of the wrong sign",
                sched(delay=secs(1, -1)),
                INVALID,
                "schedule.delay",
            ),
            Row("start on the last day", sched(start_time=at(9999, 12, 29)), OK),
            Row(
                "start after it", sched(start_time=at(9999, 12, 30)), INVALID, "schedule.start_time"
            ),
            Row("start at 2^62 s", sched(start_time=raw_ts(2**62)), INVALID, "schedule.start_time"),
            Row(
                "start, negative nanos",
                sched(start_time=raw_ts(now + 60, -1)),
                INVALID,
                "schedule.start_time",
            ),
            Row(
                "cron starting 9999-12-31 in New York",
                sched(start_time=at(9999, 12, 31), time_zone="America/New_York", **cron),
                INVALID,
                "schedule.start_time",
            ),
            Row(
                "cron with no occurrence left",
                sched(start_time=at(9999, 12, 29), **cron),
                INVALID,
                "schedule",
            ),
            Row("cron ending at the last Timestamp", sched(end_time=raw_ts(TS_MAX), **cron), OK),
            Row(
                "cron ending past it",
                sched(end_time=raw_ts(TS_MAX + 1), **cron),
                INVALID,
                "schedule.end_time",
            ),
            Row("interval of 100 years", sched(interval=secs(100 * 365 * DAY)), OK),
            Row(
                "interval past Duration",
                sched(interval=secs(315_576_000_001)),
                INVALID,
                "schedule.interval",
            ),
            Row("interval of 2^62 s", sched(interval=secs(2**62)), INVALID, "schedule.interval"),
            Row("jitter of 366 days", sched(jitter=secs(366 * DAY), **cron), OK),
            Row(
                "jitter past it",
                sched(jitter=secs(366 * DAY + 1), **cron),
                INVALID,
                "schedule.jitter",
            ),
            Row("catch-up of 366 days", sched(catchup_window=secs(366 * DAY), **cron), OK),
            Row(
                "catch-up past it",
                sched(catchup_window=secs(366 * DAY + 1), **cron),
                INVALID,
                "schedule.catchup_window",
            ),
        ]
    )


async def test_waits(server: Running) -> None:
    policy = job_pb2.RetryPolicy
    year = secs(366 * DAY)
    retry = lambda d: server.jobs.RetryJob(pb.RetryJobRequest(id=UNKNOWN_ID, delay=d))  # noqa: E731
    fail = lambda d: server.workers.FailJob(  # noqa: E731
        worker_service_pb2.FailJobRequest(job_id=UNKNOWN_ID, epoch=1, worker_id="w", retry_after=d)
    )
    lease = lambda **f: server.workers.LeaseJobs(  # noqa: E731
        worker_service_pb2.LeaseJobsRequest(worker_id="w", queues=["none"], **f)
    )
    await check_rows(
        [
            Row("timeout of 366 days", enqueue(server, timeout=year), OK),
            Row(
                "timeout past it", enqueue(server, timeout=secs(366 * DAY + 1)), INVALID, "timeout"
            ),
            Row("timeout of 2^62 s", enqueue(server, timeout=secs(2**62)), INVALID, "timeout"),
            Row("timeout of zero", enqueue(server, timeout=secs(0)), INVALID, "timeout"),
            Row(
                "backoffs of 366 days",
                enqueue(server, retry_policy=policy(initial_backoff=year, max_backoff=year)),
                OK,
            ),
            Row(
                "backoff of 2^62 s",
                enqueue(server, retry_policy=policy(max_backoff=secs(2**62))),
                INVALID,
                "retry_policy.max_backoff",
            ),
            Row("retry delay of 366 days", lambda: retry(year), NOT_FOUND),
            Row("retry delay past it", lambda: retry(secs(366 * DAY + 1)), INVALID, "delay"),
            Row("retry delay of 2^62 s", lambda: retry(secs(2**62)), INVALID, "delay"),
            Row("retry_after of 366 days", lambda: fail(year), NOT_FOUND),
            Row("retry_after of 2^62 s", lambda: fail(secs(2**62)), INVALID, "retry_after"),
            Row("lease of an hour", lambda: lease(lease_duration=secs(3600)), OK),
            Row(
                "lease past it", lambda: lease(lease_duration=secs(3601)), INVALID, "lease_duration"
            ),
            Row("wait past a minute", lambda: lease(wait=secs(61)), INVALID, "wait"),
        ]
    )


async def test_filter_time_ranges(server: Running) -> None:
    def listing(**bounds: Any) -> Call:
        flt = job_pb2.JobFilter(create_time=job_pb2.TimeRange(**bounds))
        return lambda: server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))

    field = "filter.create_time.start_time"
    await check_rows(
        [
            Row("the first Timestamp", listing(start_time=raw_ts(TS_MIN)), OK),
            Row("before it", listing(start_time=raw_ts(TS_MIN - 1)), INVALID, field),
            Row("the last Timestamp", listing(start_time=raw_ts(TS_MAX, 999_999_999)), OK),
            Row("after it", listing(start_time=raw_ts(TS_MAX + 1)), INVALID, field),
            Row("2^62 s", listing(start_time=raw_ts(2**62)), INVALID, field),
            Row("nanos of a whole second", listing(start_time=raw_ts(0, 10**9)), INVALID, field),
        ]
    )


async def test_preview_near_the_ends_of_time(server: Running) -> None:
    def preview(after: Any, count: int = 3, **fields: Any) -> Call:
        schedule = job_pb2.Schedule(**fields)
        request = pb.PreviewScheduleRequest(schedule=schedule, count=count, after_time=after)
        return lambda: server.jobs.PreviewSchedule(request)

    # the one occurrence that exists before the end, not UNKNOWN
    got = await preview(at(9998, 6, 1), cron="0 0 1 1 *")()
    assert [f.time.ToDatetime(UTC) for f in got.fire_times] == [datetime(9999, 1, 1, tzinfo=UTC)]
    # year 1 west of UTC: local times before year 1 never show up
    got = await preview(at(1, 6, 1), cron="0 0 * * *", time_zone="America/New_York")()
    assert [f.local_time[:10] for f in got.fire_times] == ["0001-06-01", "0001-06-02", "0001-06-03"]
    # east of UTC near the end: nothing whose local time would be in year 10000
    got = await preview(at(9999, 12, 28), count=10, cron="0 * * * *", time_zone="Asia/Tokyo")()
    assert got.fire_times and all(f.local_time.startswith("9999-12-") for f in got.fire_times)
    await check_rows(
        [
            Row("interval near the end", preview(at(9998, 6, 1), interval=secs(365 * DAY)), OK),
            Row(
                "after the first days of year 1",
                preview(at(1, 1, 1), cron="0 0 * * *"),
                INVALID,
                "after_time",
            ),
            Row("after the end", preview(raw_ts(TS_MAX), cron="0 0 * * *"), INVALID, "after_time"),
            Row("after 2^62 s", preview(raw_ts(2**62), cron="0 0 * * *"), INVALID, "after_time"),
        ]
    )


async def test_computed_times_stay_in_range(server: Running) -> None:
    # the longest wait from now still lands inside the Timestamp range, and lists back
    year = secs(366 * DAY)
    policy = job_pb2.RetryPolicy(initial_backoff=year, max_backoff=year, jitter=0.0)
    job = (
        await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="t", queue="far", retry_policy=policy)
        )
    ).job
    leased = await server.workers.LeaseJobs(
        worker_service_pb2.LeaseJobsRequest(worker_id="w", queues=["far"], tasks=["t"])
    )
    [lease] = leased.leases
    failed = await server.workers.FailJob(
        worker_service_pb2.FailJobRequest(
            job_id=job.id, epoch=lease.epoch, worker_id="w", retry_after=year
        )
    )
    assert failed.job.state == job_pb2.JOB_STATE_RETRYING
    wait = failed.job.next_run_time.seconds - time.time()
    assert 365 * DAY < wait <= 367 * DAY
    listed = await server.jobs.ListJobs(pb.ListJobsRequest())
    assert all(j.next_run_time.seconds <= TS_MAX for j in listed.jobs)
