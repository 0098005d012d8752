"""Next-fire computation: DST cases by hand, and scans against a brute-force cron matcher."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st
from jobwheel.server.model import SECOND, DstFoldPolicy, DstGapPolicy, Schedule
from jobwheel.server.rules.triggers import (
    missed,
    next_fires,
    occurrences_between,
    validate_cron,
    validate_time_zone,
)

MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


def us(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def utc(*args: int) -> int:
    return us(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> int:
    return us(datetime(*args, tzinfo=zone, fold=fold))  # type: ignore[misc]


# -- DST, by hand ---------------------------------------------------------------------------


def test_gap_shift_forward_and_skip() -> None:
    base = Schedule(cron="30 2 * * *", time_zone="America/New_York")
    after = local(NY, 2026, 3, 7, 12)
    shifted = next_fires(base, after, 2)
    assert [f.time for f in shifted] == [utc(2026, 3, 8, 7, 30), utc(2026, 3, 9, 6, 30)]
    assert shifted[0].dst_gap and not shifted[1].dst_gap
    assert shifted[0].local == datetime(2026, 3, 8, 3, 30, tzinfo=NY)
    skip = Schedule(
        cron="30 2 * * *", time_zone="America/New_York", dst_gap_policy=DstGapPolicy.SKIP
    )
    assert [f.time for f in next_fires(skip, after, 1)] == [utc(2026, 3, 9, 6, 30)]


def test_fold_first_second_both() -> None:
    after = local(NY, 2026, 10, 31, 12)
    expected = {
        DstFoldPolicy.FIRST: [utc(2026, 11, 1, 5, 30)],
        DstFoldPolicy.SECOND: [utc(2026, 11, 1, 6, 30)],
        DstFoldPolicy.BOTH: [utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)],
    }
    for policy, times in expected.items():
        schedule = Schedule(cron="30 1 * * *", time_zone="America/New_York", dst_fold_policy=policy)
        fires = next_fires(schedule, after, len(times) + 1)
        assert [f.time for f in fires[:-1]] == times
        assert all(f.dst_fold for f in fires[:-1]) and not fires[-1].dst_fold
        assert fires[-1].time == utc(2026, 11, 2, 6, 30)


def _fires_per_local_day(schedule: Schedule, day: datetime) -> list[int]:
    start = us(day.replace(tzinfo=LONDON))
    end = us((day + timedelta(days=1)).replace(tzinfo=LONDON))
    return [f.time for f in occurrences_between(schedule, start - 1, end - 1, 100)]


def test_hourly_london_spring_forward() -> None:
    day = datetime(2026, 3, 29)
    for policy in DstGapPolicy:
        schedule = Schedule(cron="0 * * * *", time_zone="Europe/London", dst_gap_policy=policy)
        times = _fires_per_local_day(schedule, day)
        # 01:00 GMT does not exist. Shifted forward it is 01:00 UTC = 02:00 BST, a fire the
        # day has anyway: 23 fires under both policies, one per real hour.
        assert len(times) == 23
        assert times == [utc(2026, 3, 29, 0)] + [utc(2026, 3, 29, h) for h in range(1, 23)]
    shifted = next_fires(Schedule(cron="0 * * * *", time_zone="Europe/London"), utc(2026, 3, 29), 1)
    assert shifted[0].dst_gap  # the merged fire remembers the shifted wall time


def test_hourly_london_fall_back() -> None:
    day = datetime(2026, 10, 25)
    counts = {}
    for policy in DstFoldPolicy:
        schedule = Schedule(cron="0 * * * *", time_zone="Europe/London", dst_fold_policy=policy)
        times = _fires_per_local_day(schedule, day)
        counts[policy] = len(times)
        assert times == sorted(set(times))
        assert utc(2026, 10, 24, 23) in times and utc(2026, 10, 25, 23) in times
        assert (utc(2026, 10, 25, 0) in times) == (policy != DstFoldPolicy.SECOND)
        assert (utc(2026, 10, 25, 1) in times) == (policy != DstFoldPolicy.FIRST)
    assert counts == {DstFoldPolicy.FIRST: 24, DstFoldPolicy.SECOND: 24, DstFoldPolicy.BOTH: 25}


def test_half_hourly_across_gap_is_sorted_and_deduplicated() -> None:
    schedule = Schedule(cron="*/30 * * * *", time_zone="America/New_York")
    fires = next_fires(schedule, utc(2026, 3, 8, 6), 4)
    # 02:00 and 02:30 EST do not exist; shifted they coincide with 03:00 and 03:30 EDT.
    assert [f.time for f in fires] == [
        utc(2026, 3, 8, 6, 30),
        *(utc(2026, 3, 8, 7, m) for m in (0, 30)),
        utc(2026, 3, 8, 8),
    ]
    assert [f.dst_gap for f in fires] == [False, True, True, False]


# -- interval, bounds, seconds, validation --------------------------------------------------


def test_interval_anchoring() -> None:
    start = utc(2026, 1, 1)
    anchored = Schedule(start_time=start, interval=10 * MINUTE)
    assert [f.time for f in next_fires(anchored, start - 1, 2)] == [start, start + 10 * MINUTE]
    assert next_fires(anchored, start + 25 * MINUTE, 1)[0].time == start + 30 * MINUTE
    assert next_fires(anchored, start + 30 * MINUTE, 1)[0].time == start + 40 * MINUTE
    # without start_time the schedule carries its first occurrence (set at enqueue)
    first = utc(2026, 1, 1, 0, 1, 30)
    fixed = Schedule(interval=90 * SECOND, anchor=first)
    assert next_fires(fixed, first - HOUR, 1)[0].time == first
    assert next_fires(fixed, first + 100 * SECOND, 1)[0].time == first + 180 * SECOND
    floating = Schedule(interval=90 * SECOND)  # stored before anchors: counted from `after`
    assert [f.time for f in next_fires(floating, 1_000, 2)] == [
        1_000 + 90 * SECOND,
        1_000 + 180 * SECOND,
    ]


def test_end_time_is_exclusive_and_start_time_in_the_future() -> None:
    start = utc(2026, 6, 1, 12)
    schedule = Schedule(cron="0 * * * *", start_time=start, end_time=start + 3 * HOUR)
    times = [f.time for f in next_fires(schedule, utc(2026, 1, 1), 10)]
    assert times == [start, start + HOUR, start + 2 * HOUR]
    once = Schedule(start_time=start)
    assert [f.time for f in next_fires(once, start - 1, 5)] == [start]
    assert next_fires(once, start, 5) == []


def test_six_field_cron_has_seconds_last() -> None:
    fires = next_fires(Schedule(cron="*/5 * * * * 15"), utc(2026, 1, 1), 3)
    assert [f.time for f in fires] == [utc(2026, 1, 1, 0, m, 15) for m in (0, 5, 10)]


def test_aliases_and_never_firing_cron() -> None:
    assert next_fires(Schedule(cron="@daily"), utc(2026, 1, 1, 5), 1)[0].time == utc(2026, 1, 2)
    assert next_fires(Schedule(cron="0 0 30 2 *"), utc(2026, 1, 1), 3) == []


def test_one_value_ranges_are_not_the_whole_field() -> None:
    # croniter alone reads these as "*"; see triggers._normalize.
    hourly = next_fires(Schedule(cron="0-0 * * * *"), utc(2026, 3, 8), 2)
    assert [f.time for f in hourly] == [utc(2026, 3, 8, 1), utc(2026, 3, 8, 2)]
    monday = next_fires(Schedule(cron="0 12 * * 1-1"), utc(2026, 3, 8), 1)  # a Sunday
    assert monday[0].time == utc(2026, 3, 9, 12)
    stepped = next_fires(Schedule(cron="10-10/2 * * * *"), utc(2026, 3, 8), 1)
    assert stepped[0].time == utc(2026, 3, 8, 0, 10)


def test_occurrences_between_is_half_open_and_capped() -> None:
    schedule = Schedule(cron="0 * * * *")
    got = occurrences_between(schedule, utc(2026, 1, 1), utc(2026, 1, 1, 5), 10)
    assert [f.time for f in got] == [utc(2026, 1, 1, h) for h in range(1, 6)]
    assert len(occurrences_between(schedule, utc(2026, 1, 1), utc(2026, 2, 1), 3)) == 3


@settings(max_examples=200, deadline=None)
@given(
    step=st.integers(MINUTE, 3 * HOUR),
    anchor=st.one_of(st.none(), st.integers(utc(2025, 1, 1), utc(2027, 1, 1))),
    start=st.one_of(st.none(), st.integers(utc(2025, 1, 1), utc(2027, 1, 1))),
    end=st.one_of(st.none(), st.integers(utc(2025, 6, 1), utc(2028, 1, 1))),
    after=st.integers(utc(2024, 1, 1), utc(2027, 1, 1)),
    span=st.integers(0, 10 * DAY),
    cap=st.integers(1, 50),
)
def test_missed_counts_interval_fires_past_the_cap_as_listing_them_all_would(
    step: int,
    anchor: int | None,
    start: int | None,
    end: int | None,
    after: int,
    span: int,
    cap: int,
) -> None:
    # the oracle: every fire listed, no cap
    schedule = Schedule(interval=step, anchor=anchor, start_time=start, end_time=end)
    until = after + span
    every = occurrences_between(schedule, after, until, 10**7)
    assert missed(schedule, after, until, cap) == (
        len(every),
        every[-1].time if every else None,
    )


def test_missed_finds_a_cron_schedules_last_fire_past_the_cap() -> None:
    minutely = Schedule(cron="* * * * *")
    after, until = utc(2026, 1, 1), utc(2026, 3, 1, 7, 30, 59)
    assert missed(minutely, after, until, 1000) == (1000, utc(2026, 3, 1, 7, 30))
    monthly = Schedule(cron="0 0 1 * *")  # fewer than the cap: counted and listed
    assert missed(monthly, after, utc(2027, 1, 1), 100) == (12, utc(2027, 1, 1))
    yearly = Schedule(cron="0 0 1 1 *")  # the last fire more than a year back
    assert missed(yearly, utc(2000, 1, 1), utc(2026, 6, 1), 5) == (5, utc(2026, 1, 1))


def test_validation_messages() -> None:
    assert validate_cron("*/5 * * * *") is None
    assert validate_cron("0 0 * * * 30") is None
    assert validate_cron("@hourly") is None
    assert "5" in (validate_cron("* * *") or "")
    assert "out of range" in (validate_cron("61 * * * *") or "")
    assert "alias" in (validate_cron("@often") or "")
    assert validate_cron(" ") == "is empty"
    assert validate_cron("* * * * * * *") is not None
    assert validate_time_zone("Europe/Paris") is None
    assert "unknown time zone" in (validate_time_zone("Mars/Olympus") or "")
    assert validate_time_zone("../../etc/passwd") is not None


# -- properties against a brute-force matcher -----------------------------------------------


def _field(draw: st.DrawFn, low: int, high: int) -> str:
    kind = draw(st.sampled_from(["*", "n", "list", "range", "range_step", "step"]))
    if kind == "n":
        return str(draw(st.integers(low, high)))
    if kind == "list":
        return ",".join(
            map(str, sorted(draw(st.sets(st.integers(low, high), min_size=1, max_size=4))))
        )
    if kind in ("range", "range_step"):
        a = draw(st.integers(low, high))
        spec = f"{a}-{draw(st.integers(a, high))}"
        return spec if kind == "range" else f"{spec}/{draw(st.integers(1, 10))}"
    return "*" if kind == "*" else f"*/{draw(st.integers(1, high - low + 1))}"


def _allowed(spec: str, low: int, high: int) -> set[int]:
    if spec == "*":
        return set(range(low, high + 1))
    if spec.startswith("*/"):
        return set(range(low, high + 1, int(spec[2:])))
    if "-" in spec:
        bounds, _, step = spec.partition("/")
        a, b = map(int, bounds.split("-"))
        return set(range(a, b + 1, int(step or 1)))
    return set(map(int, spec.split(",")))


@st.composite
def crons(draw: st.DrawFn) -> str:
    fields = [
        _field(draw, 0, 59),
        _field(draw, 0, 23),
        draw(st.sampled_from(["*", "1-15", "*/2", "3"])),
    ]
    fields += ["*", draw(st.sampled_from(["*", "1-5", "0,6", "3"]))]
    if draw(st.booleans()):
        fields.append(_field(draw, 0, 59))
    return " ".join(fields)


def _matcher(cron: str) -> Callable[[datetime], bool]:
    f = cron.split()
    minutes, hours = _allowed(f[0], 0, 59), _allowed(f[1], 0, 23)
    days, weekdays = _allowed(f[2], 1, 31), _allowed(f[4], 0, 6)
    seconds = _allowed(f[5], 0, 59) if len(f) == 6 else {0}
    # Vixie cron / cronie: a field starting with '*' makes a day match both, else either
    either = not f[2].startswith("*") and not f[4].startswith("*")

    def matches(wall: datetime) -> bool:
        if wall.minute not in minutes or wall.hour not in hours or wall.second not in seconds:
            return False
        dom, dow = wall.day in days, (wall.isoweekday() % 7) in weekdays
        return (dom or dow) if either else (dom and dow)

    return matches


def _offsets(naive: datetime, zone: ZoneInfo) -> tuple[timedelta, timedelta]:
    """The offsets fold=0 and fold=1 give: equal normally, falling in a fold, rising in a gap."""
    first = naive.replace(tzinfo=zone, fold=0).utcoffset()
    second = naive.replace(tzinfo=zone, fold=1).utcoffset()
    assert first is not None and second is not None
    return first, second


def _oracle(schedule: Schedule, after: int, until: int) -> list[int]:
    """Scan instants step by step; keep those a matching wall time maps to under the policies."""
    zone = ZoneInfo(schedule.time_zone or "UTC")
    step = SECOND if len(schedule.cron.split()) == 6 else MINUTE
    matches = _matcher(schedule.cron)
    out = []
    t = after - after % step + step
    while t <= until:
        at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t)
        wall = at.astimezone(zone)
        naive = wall.replace(tzinfo=None)
        first, second = _offsets(naive, zone)
        ambiguous = first != second
        keep = matches(naive) and (
            not ambiguous
            or schedule.dst_fold_policy == DstFoldPolicy.BOTH
            or (wall.fold == 0) == (schedule.dst_fold_policy == DstFoldPolicy.FIRST)
        )
        if not keep and schedule.dst_gap_policy == DstGapPolicy.SHIFT_FORWARD:
            # A skipped wall time w fires at w - (offset before the jump).
            before = (at - timedelta(hours=3)).astimezone(zone).utcoffset()
            assert before is not None
            gap_wall = (at + before).replace(tzinfo=None)
            # only a skipped wall time: one in a fold (01:59 EDT on fall-back day) exists
            skipped_first, skipped_second = _offsets(gap_wall, zone)
            keep = skipped_first < skipped_second and matches(gap_wall)
        if keep:
            out.append(t)
        t += step
    return out


@settings(max_examples=60, deadline=None)
@given(crons(), st.integers(utc(2020, 1, 1), utc(2030, 1, 1)), st.integers(1, 6))
def test_utc_cron_matches_scan(cron: str, after: int, count: int) -> None:
    schedule = Schedule(cron=cron)
    window = HOUR if len(cron.split()) == 6 else 2 * DAY
    expected = _oracle(schedule, after, after + window)
    got = [f.time for f in next_fires(schedule, after, count)]
    assert got[: len(expected)] == expected[:count]
    assert all(t > after + window for t in got[len(expected) :])
    assert all(a < b for a, b in zip([after, *got], got, strict=False))


TRANSITIONS = [
    ("America/New_York", utc(2026, 3, 8, 7)),
    ("America/New_York", utc(2026, 11, 1, 6)),
    ("Europe/London", utc(2026, 3, 29, 1)),
    ("Europe/London", utc(2026, 10, 25, 1)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15)),  # a 30-minute shift
]


@settings(max_examples=60, deadline=None)
@given(
    crons().filter(lambda c: len(c.split()) == 5),
    st.sampled_from(TRANSITIONS),
    st.integers(-6 * HOUR, 4 * HOUR),
    st.sampled_from(DstGapPolicy),
    st.sampled_from(DstFoldPolicy),
    st.integers(1, 8),
)
# 03:30 EDT, just past New York's spring-forward jump: the gap's 02:31..02:59, shifted
# forward, still lie ahead (the scan once began at 03:29 wall time and fired 20.5 h late).
@example(
    "* 0,2 * * *",
    ("America/New_York", utc(2026, 3, 8, 7)),
    30 * MINUTE,
    DstGapPolicy.SHIFT_FORWARD,
    DstFoldPolicy.FIRST,
    3,
)
# 01:58:59 EDT on fall-back day under SECOND: 01:59 EDT exists (in the fold), so it is not
# a skipped wall time to shift, and the first fire is 01:00 EST.
@example(
    "* * * * *",
    ("America/New_York", utc(2026, 11, 1, 6)),
    -MINUTE - 1,
    DstGapPolicy.SHIFT_FORWARD,
    DstFoldPolicy.SECOND,
    1,
)
def test_dst_cron_matches_scan(
    cron: str,
    transition: tuple[str, int],
    shift: int,
    gap: DstGapPolicy,
    fold: DstFoldPolicy,
    count: int,
) -> None:
    zone, instant = transition
    schedule = Schedule(cron=cron, time_zone=zone, dst_gap_policy=gap, dst_fold_policy=fold)
    after = instant + shift
    window = 12 * HOUR
    expected = _oracle(schedule, after, after + window)
    got = [f.time for f in next_fires(schedule, after, count)]
    assert got[: len(expected)] == expected[:count]
    assert all(t > after + window for t in got[len(expected) :])


@settings(max_examples=40, deadline=None)
@given(
    crons() | st.sampled_from(["0 * * * *", "*/30 1-3 * * *", "30 1 * * *", "30 2 * * *"]),
    st.sampled_from(["", "America/New_York", "Europe/London"]),
    st.sampled_from(DstFoldPolicy),
    st.integers(utc(2026, 3, 1), utc(2026, 11, 5)),
    st.integers(1, 5),
)
def test_chaining_equals_one_call(
    cron: str, zone: str, fold: DstFoldPolicy, after: int, step: int
) -> None:
    schedule = Schedule(cron=cron, time_zone=zone, dst_fold_policy=fold)
    whole = next_fires(schedule, after, 3 * step)
    chained = []
    cursor = after
    for _ in range(3):
        part = next_fires(schedule, cursor, step)
        chained += part
        if not part:
            break
        cursor = part[-1].time
    assert chained == whole
    assert all(a.time < b.time for a, b in itertools.pairwise(whole))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 10 * DAY),
    st.none() | st.integers(0, 10**15),
    st.integers(0, 10**15),
    st.integers(1, 20),
)
def test_interval_matches_arithmetic(
    interval: int, start: int | None, after: int, count: int
) -> None:
    schedule = Schedule(interval=interval, start_time=start)
    got = [f.time for f in next_fires(schedule, after, count)]
    anchor = after if start is None else start
    first = anchor + interval if start is None else start
    # the same grid given as an anchor (no start_time) fires at the same times
    if start is not None:
        assert next_fires(Schedule(interval=interval, anchor=start), after, count) == (
            next_fires(schedule, after, count)
        )
    expected = []
    t = first
    while len(expected) < count:
        if t > after:
            expected.append(t)
        t += (
            interval
            if t > after or start is None
            else max(interval, (after - t) // interval * interval)
        )
    assert got == expected
    assert all((t - anchor) % interval == 0 for t in got)


def test_fire_counter_sanity() -> None:
    # Hourly over a whole year in London: one fire per real hour (SHIFT_FORWARD, FIRST).
    schedule = Schedule(cron="0 * * * *", time_zone="Europe/London")
    got = occurrences_between(schedule, utc(2026, 1, 1) - 1, utc(2027, 1, 1) - 1, 10_000)
    assert len(got) == 365 * 24 - 1  # FIRST drops the repeated hour's second pass
    per_day = Counter(f.local.date() for f in got)
    assert per_day[datetime(2026, 3, 29).date()] == 23
    assert per_day[datetime(2026, 10, 25).date()] == 24


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["*", "*/2", "*/3", "1-31/2", "1,15", "13", "1-7", "31", "*/10", "L"]),
    st.sampled_from(["*", "*/2", "1", "5", "0,6", "1-5", "*/3", "mon"]),
    st.integers(utc(2020, 1, 1), utc(2030, 1, 1)),
)
def test_day_of_month_and_week_follow_vixie_cron(dom: str, dow: str, after: int) -> None:
    """Daily scan: a day matches both fields when either starts with '*', else either one."""
    schedule = Schedule(cron=f"0 0 {dom} * {dow}")
    got = [f.time for f in next_fires(schedule, after, 5)]
    start = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=after)).date()

    def days(spec: str, last: int, low: int, high: int) -> set[int]:
        if spec == "L":
            return {last}
        return _allowed(spec.replace("mon", "1"), low, high)

    expected: list[int] = []
    day = start
    while len(expected) < 5 and day < start + timedelta(days=800):
        last = ((day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)).day
        in_month = day.day in days(dom, last, 1, 31)
        in_week = (day.isoweekday() % 7) in days(dow, last, 0, 6)
        both = dom.startswith("*") or dow.startswith("*")
        if (in_month and in_week) if both else (in_month or in_week):
            t = us(datetime(day.year, day.month, day.day, tzinfo=UTC))
            if t > after:
                expected.append(t)
        day += timedelta(days=1)
    assert got[: len(expected)] == expected


def test_vixie_examples() -> None:
    after = utc(2026, 1, 1)
    mondays_on_odd_days = next_fires(Schedule(cron="0 0 */2 * 1"), after, 3)
    assert [f.local.day for f in mondays_on_odd_days] == [5, 19, 9]  # Jan 5, Jan 19, Feb 9
    first_fifteenth_or_monday = next_fires(Schedule(cron="0 0 1,15 * 1"), after, 4)
    assert [f.local.day for f in first_fifteenth_or_monday] == [5, 12, 15, 19]
