"""Fire computation at the ends of time: any schedule, any zone, any instant of the Timestamp
range gives fires inside [EARLIEST_FIRE, LATEST_FIRE] with a local time, never an error."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server.model import MAX_TIME, MIN_TIME, SECOND, Schedule
from jobwheel.server.scheduling import triggers

ZONES = ["UTC", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Tokyo"]
CRONS = ["0 0 1 1 *", "* * * * *", "0 * * * *", "0 0 29 2 *", "*/30 * * * * *", "0 0 * * 1"]
DAY = 86_400 * SECOND
EDGES = [MIN_TIME, MIN_TIME + DAY, MAX_TIME - 3 * DAY, MAX_TIME - DAY, MAX_TIME]
instants = st.one_of(st.sampled_from(EDGES), st.integers(MIN_TIME, MAX_TIME))


def _check(fires: list[triggers.Fire]) -> None:
    times = [f.time for f in fires]
    assert times == sorted(set(times))
    for fire in fires:
        assert triggers.EARLIEST_FIRE <= fire.time <= triggers.LATEST_FIRE
        assert 1 <= fire.local.year <= 9999


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CRONS), st.sampled_from(ZONES), instants)
def test_cron_fires_stay_in_range(cron: str, zone: str, after: int) -> None:
    _check(triggers.next_fires(Schedule(cron=cron, time_zone=zone), after, 3))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(SECOND, 315_576_000_000 * SECOND),
    st.sampled_from(ZONES),
    instants,
    st.one_of(st.none(), instants),
)
def test_interval_fires_stay_in_range(step: int, zone: str, after: int, start: int | None) -> None:
    schedule = Schedule(interval=step, time_zone=zone, start_time=start)
    _check(triggers.next_fires(schedule, after, 3))


def test_the_last_new_year_is_found() -> None:
    after = MAX_TIME - 300 * DAY  # 9999-03-07
    [fire] = triggers.next_fires(Schedule(cron="0 0 1 1 *"), after - 100 * DAY, 3)
    assert fire.local.isoformat() == "9999-01-01T00:00:00+00:00"
