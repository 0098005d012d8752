"""Misfire and overlap policies as pure functions of the job and the time."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.model import SECOND, MisfirePolicy, OverlapPolicy
from jobwheel.server.rules import recurrence

T0 = 1_800_000_000 * SECOND
MIN = 60 * SECOND


def job(next_run: int, execution: int = 1, **schedule: object) -> model.Job:
    return model.Job(
        id="j",
        queue="default",
        task="t",
        payload={},
        labels={},
        priority=0,
        state=model.JobState.SCHEDULED,
        schedule=model.Schedule(start_time=T0, interval=MIN, **schedule),  # type: ignore[arg-type]
        retry_policy=model.RetryPolicy(),
        timeout=None,
        idempotency_key=None,
        http=None,
        create_time=T0,
        update_time=T0,
        next_run_time=next_run,
        execution_count=execution,
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # due at T0+1m; down until T0+4m30s: T0+1m, 2m, 3m, 4m were missed
        (MisfirePolicy.SKIP, recurrence.Next(T0 + 5 * MIN, 4)),
        (MisfirePolicy.RUN_ONCE, recurrence.Next(T0 + 4 * MIN, 3)),
        (MisfirePolicy.RUN_ALL, recurrence.Next(T0 + 1 * MIN, 0)),
    ],
)
def test_catch_up(policy: MisfirePolicy, expected: recurrence.Next) -> None:
    now = T0 + 4 * MIN + 30 * SECOND
    assert recurrence.catch_up(job(T0 + MIN, misfire_policy=policy), now, 0.5) == expected


def test_run_all_stays_within_the_catchup_window() -> None:
    now = T0 + 4 * MIN + 30 * SECOND
    late = job(T0 + MIN, misfire_policy=MisfirePolicy.RUN_ALL, catchup_window=2 * MIN)
    # only T0+3m and T0+4m lie in the last two minutes
    assert recurrence.catch_up(late, now, 0.5) == recurrence.Next(T0 + 3 * MIN, 2)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # the execution for T0+1m ran until T0+3m30s: T0+2m and T0+3m came due meanwhile
        (OverlapPolicy.SKIP, recurrence.Next(T0 + 4 * MIN, 2)),
        (OverlapPolicy.BUFFER_ONE, recurrence.Next(T0 + 3 * MIN, 1)),
        (OverlapPolicy.CANCEL_OTHER, recurrence.Next(T0 + 3 * MIN, 1)),
        (OverlapPolicy.ALLOW_ALL, recurrence.Next(T0 + 4 * MIN, 0)),  # they ran as children
    ],
)
def test_after_an_execution_that_overran(policy: OverlapPolicy, expected: recurrence.Next) -> None:
    ended = T0 + 3 * MIN + 30 * SECOND
    ran = job(T0 + MIN, overlap_policy=policy, misfire_policy=MisfirePolicy.SKIP)
    assert recurrence.after_execution(ran, ended, 0.5) == expected


def test_limit_and_end_time_end_the_schedule() -> None:
    assert recurrence.after_execution(job(T0, execution=3, limit=3), T0 + 1, 0.5).time is None
    ending = job(T0, end_time=T0 + 30 * SECOND)
    assert recurrence.after_execution(ending, T0 + 1, 0.5).time is None


@settings(max_examples=100, deadline=None)
@given(
    st.integers(SECOND, 10 * MIN),
    st.lists(st.floats(0.0, 0.95), min_size=1, max_size=20),
    st.booleans(),
)
def test_interval_runs_start_to_start(interval: int, runs: list[float], anchored: bool) -> None:
    """Executions shorter than the interval never shift the grid: with or without a start
    time, every occurrence is first + k * interval and none is skipped."""
    first = T0 + interval
    schedule = (
        model.Schedule(start_time=first, interval=interval)
        if anchored
        else model.Schedule(interval=interval, anchor=first)
    )
    current = replace(job(first), schedule=schedule)
    for k, share in enumerate(runs):
        assert current.next_run_time == first + k * interval  # the oracle: a plain grid
        ends = current.next_run_time + int(share * interval)
        nxt = recurrence.after_execution(current, ends, 0.5)
        assert nxt.skipped == 0 and nxt.time is not None
        current = replace(current, next_run_time=nxt.time, execution_count=k + 2)
