"""A schedule's own rules (rules/schedules.py) and the job's initial state (rules/states.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.model import SECOND, JobState, Schedule
from jobwheel.server.rules import schedules, states

NOW = 1_800_000_000 * SECOND


def fields(schedule: Schedule) -> list[str]:
    return [p.field for p in schedules.problems(schedule, NOW)]


def test_a_sound_schedule_has_no_problems() -> None:
    assert fields(Schedule(cron="0 10 * * *", time_zone="Europe/Paris", limit=3)) == []
    assert fields(Schedule(interval=60 * SECOND, end_time=NOW + SECOND)) == []
    assert fields(Schedule(start_time=NOW + SECOND)) == []


def test_each_broken_rule_names_its_field() -> None:
    assert fields(Schedule(cron="61 * * * *")) == ["cron"]
    assert fields(Schedule(cron="* * * * *", time_zone="Nowhere/Land")) == ["time_zone"]
    assert fields(Schedule(cron="* * * * *", interval=SECOND)) == ["interval"]
    assert fields(Schedule(interval=SECOND, limit=-1)) == ["limit"]
    assert fields(Schedule(interval=SECOND, end_time=NOW)) == ["end_time"]
    assert fields(Schedule(start_time=NOW + 5, interval=SECOND, end_time=NOW + 5)) == ["end_time"]
    assert fields(Schedule(limit=2, end_time=NOW + SECOND)) == ["limit", "end_time"]


@given(st.integers(-(2**40), 2**40))
def test_initial_state_is_queued_exactly_when_due(offset: int) -> None:
    state = states.initial_state(NOW + offset, NOW)
    assert state is (JobState.SCHEDULED if offset > 0 else JobState.QUEUED)
