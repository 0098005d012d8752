"""Next-fire computation for schedules: cron (croniter + zoneinfo), interval, one-off. Pure.

Cron expressions are evaluated on naive local wall-clock time, so croniter never sees a zone
and its own DST handling plays no part. Each matching wall time is then mapped to UTC here:

- a wall time the zone skips (spring-forward gap) follows `dst_gap_policy`: SHIFT_FORWARD
  fires it as if the clock had not jumped yet, i.e. moved forward by the gap length (02:30 in
  a 1 h gap fires at 03:30 new time); SKIP drops it. Such fires are flagged `dst_gap`.
- a wall time the zone repeats (fall-back fold) follows `dst_fold_policy`: FIRST fires at the
  earlier instant, SECOND at the later, BOTH at both. Such fires are flagged `dst_fold`.
- wall times that land on the same instant fire once (flags are merged). Example: hourly in
  Europe/London on 2026-03-29, 01:00 GMT does not exist; shifted forward it is 01:00 UTC, which
  is also 02:00 BST, so that day has 23 fires either way.

Mapping wall times to instants is not monotone near a transition (a shifted gap time lands
after the first normal times past the gap; BOTH interleaves two passes of the fold), so
candidates go through a small heap and a fire is released only once no later wall time can
map to an earlier instant (see `_settled`).
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, croniter
from jobwheel.server.model import (
    MAX_TIME,
    MIN_TIME,
    SECOND,
    DstFoldPolicy,
    DstGapPolicy,
    Micros,
    Schedule,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICRO = timedelta(microseconds=1)
# Upper bound on |UTC offset| of any zone (the largest in use is +14 h).
_MAX_OFFSET = 16 * 3600 * SECOND
# Candidates examined without producing a fire before giving up (e.g. a cron whose every
# match is a skipped DST gap time); croniter itself gives up on dates that never match.
_MAX_SILENT = 100_000
# croniter 7 reads a one-value range such as "0-0" or "10-10/2" as the whole field ("*").
_RANGE = re.compile(r"(?<![\w/-])(\w+)-(\w+)(/\d+)?(?![\w/-])")
_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
# Fires are computed within [EARLIEST_FIRE, LATEST_FIRE]: two days inside the Timestamp range,
# so that every fire's local time, in any zone, is a date Python (and every client) can hold.
EARLIEST_FIRE: Micros = MIN_TIME + 2 * 86_400 * SECOND  # 0001-01-03T00:00:00Z
LATEST_FIRE: Micros = MAX_TIME - 2 * 86_400 * SECOND  # just before 9999-12-30T00:00:00Z
LATEST_FIRE_TEXT = "9999-12-30T00:00:00Z"
# Zone names of the IANA database; not folders ("America") nor the host's "localtime".
_ZONES = frozenset(available_timezones()) - {"localtime", "posixrules"}


@dataclass(frozen=True)
class Fire:
    """One occurrence: `time` in µs UTC, `local` the aware wall time in the schedule's zone."""

    time: Micros
    local: datetime
    dst_gap: bool = False
    dst_fold: bool = False


def validate_cron(expr: str) -> str | None:
    """None if croniter accepts `expr` as 5 fields, 6 (seconds last) or an @alias; else why."""
    text = expr.strip()
    if not text:
        return "is empty"
    if text.startswith("@"):
        if text.lower() not in _ALIASES:
            return f"unknown alias {text!r}; use one of {', '.join(sorted(_ALIASES))}"
        return None
    fields = len(text.split())
    if fields not in (5, 6):
        return (
            f"has {fields} fields; expected 5 (minute hour day-of-month month day-of-week) "
            "or 6 (the same followed by seconds)"
        )
    try:
        croniter(_normalize(text), _EPOCH_NAIVE)
    except Exception as exc:  # croniter raises several types for malformed fields
        return f"invalid cron expression: {exc}"
    return None


def validate_time_zone(name: str) -> str | None:
    """None if `name` is a known IANA zone; else why."""
    if name not in _ZONES:
        shown = name if len(name) <= 40 else name[:40] + "..."
        return f"unknown time zone {shown!r}; use an IANA name such as 'Europe/Paris'"
    return None


def next_fires(schedule: Schedule, after: Micros, count: int) -> list[Fire]:
    """The next `count` fires strictly after `after`, within [start_time, end_time).

    `limit` is not applied: the caller counts executions. Interval schedules fire at
    base + k * interval (k >= 0), start to start, where base is start_time or else the anchor
    (the first occurrence, fixed at enqueue); with neither, at after + k * interval (k >= 1).
    A schedule with neither cron nor interval fires once, at start_time.
    """
    if count <= 0:
        return []
    return list(itertools.islice(_fires(schedule, after), count))


def occurrences_between(schedule: Schedule, after: Micros, until: Micros, cap: int) -> list[Fire]:
    """Fires in (after, until], at most `cap` of them (for misfire handling)."""
    if cap <= 0:
        return []
    fires = itertools.takewhile(lambda f: f.time <= until, _fires(schedule, after))
    return list(itertools.islice(fires, cap))


# Spans searched back from `until` for the last cron fire, when there are too many to list
_LOOK_BACK = tuple(hours * 3600 * SECOND for hours in (1, 24, 32 * 24, 367 * 24, 11 * 367 * 24))


def missed(schedule: Schedule, after: Micros, until: Micros, cap: int) -> tuple[int, Micros | None]:
    """How many fires lie in (after, until], and the time of the last of them (None: none).
    An interval schedule's are counted however many there are; a cron schedule's count stops
    at `cap` (each would be computed), its last fire is exact either way."""
    fires = occurrences_between(schedule, after, until, cap)
    if len(fires) < cap:
        return len(fires), fires[-1].time if fires else None
    if schedule.interval is not None and not schedule.cron:
        return _interval_span(schedule, after, until)
    last = fires[-1].time
    for span in _LOOK_BACK:
        tail = occurrences_between(schedule, max(last, until - span), until, cap)
        if tail:
            return cap, tail[-1].time
    return cap, last


def _interval_span(schedule: Schedule, after: Micros, until: Micros) -> tuple[int, Micros | None]:
    """missed() for an interval schedule, by arithmetic (the fires of _interval_fires)."""
    step = schedule.interval
    assert step is not None and step > 0
    if schedule.start_time is not None:
        after = max(after, schedule.start_time - 1)
    after = max(after, EARLIEST_FIRE - 1)
    until = min(until, LATEST_FIRE)
    if schedule.end_time is not None:
        until = min(until, schedule.end_time - 1)
    base = schedule.start_time if schedule.start_time is not None else schedule.anchor
    if base is None:  # fires at after + k * interval, k >= 1
        base, first = after, 1
    else:
        first = max(0, (after - base) // step + 1)
    last = (until - base) // step
    if last < first:
        return 0, None
    return last - first + 1, base + last * step


def _fires(schedule: Schedule, after: Micros) -> Iterator[Fire]:
    zone = ZoneInfo(schedule.time_zone) if schedule.time_zone else ZoneInfo("UTC")
    if schedule.start_time is not None:
        after = max(after, schedule.start_time - 1)
    after = max(after, EARLIEST_FIRE - 1)
    if after >= LATEST_FIRE:
        return
    end = schedule.end_time
    if schedule.cron:
        source = _cron_fires(schedule, zone, after)
    elif schedule.interval is not None:
        source = _interval_fires(schedule, zone, after)
    elif schedule.start_time is not None and schedule.start_time > after:
        source = iter([Fire(schedule.start_time, _local(schedule.start_time, zone))])
    else:
        return
    for fire in source:
        if end is not None and fire.time >= end:
            return
        yield fire


def _interval_fires(schedule: Schedule, zone: ZoneInfo, after: Micros) -> Iterator[Fire]:
    step = schedule.interval
    if step is None or step <= 0:
        return
    base = schedule.start_time if schedule.start_time is not None else schedule.anchor
    if base is None:  # stored before schedules had an anchor: counted from `after`
        time = after + step
    else:
        # `after` may precede an anchor (start_time is applied to `after` above): k >= 0
        k = max(0, (after - base) // step + 1)
        time = base + k * step
    while time <= LATEST_FIRE:
        yield Fire(time, _local(time, zone))
        time += step


def _cron_fires(schedule: Schedule, zone: ZoneInfo, after: Micros) -> Iterator[Fire]:
    # Start early enough that no wall time mapping past `after` is missed. A wall time maps
    # to u = wall - offset, with the offset in force at u, or for a shifted gap time the one
    # in force before the jump; a gap is shorter than 2 * _MAX_OFFSET, so that offset was in
    # force somewhere in [after - 2 * _MAX_OFFSET, after] when u > after (03:30 EDT just past
    # New York's 02:00 jump is the shifted 02:30 EST wall time: the scan starts at 02:30).
    # Hence wall >= after + (the smallest offset in force within 2 * _MAX_OFFSET of after),
    # sampled at the ends and around `after`: no zone changes offset twice in that window.
    low = min(
        _offset(at, zone)
        for at in (after - 2 * _MAX_OFFSET, after - SECOND, after, after + 2 * _MAX_OFFSET)
    )
    begin = _naive(after + low).replace(microsecond=0) - timedelta(seconds=1)
    cron = _normalize(schedule.cron)
    it = croniter(cron, begin, ret_type=datetime, day_or=day_or(cron))
    pending: list[tuple[int, bool, bool]] = []
    silent = 0
    while True:
        try:
            wall: datetime | None = it.get_next(datetime)
        except (CroniterBadDateError, OverflowError, ValueError):
            wall = None  # no match, or the next one lies past year 9999
        if wall is not None and (wall - _EPOCH_NAIVE) // _MICRO > LATEST_FIRE + _MAX_OFFSET:
            wall = None  # every later match maps past LATEST_FIRE
        if wall is None:
            # No more matches: whatever is buffered is final.
            while pending:
                yield _pop_fire(pending, zone)
            return
        for item in _instants(wall, zone, schedule):
            if after < item[0] <= LATEST_FIRE:
                heapq.heappush(pending, item)
        wall_us = (wall - _EPOCH_NAIVE) // _MICRO
        released = False
        while pending and _settled(pending[0][0], wall_us, zone):
            fire = _pop_fire(pending, zone)
            after = fire.time
            released = True
            yield fire
        silent = 0 if released else silent + 1
        if silent > _MAX_SILENT:
            return


def day_or(expr: str) -> bool:
    """How day-of-month and day-of-week combine, as in Vixie cron and cronie: when either
    field starts with '*' (or '?', croniter's synonym) a day must match both (AND), otherwise
    either (OR). "0 0 */2 * 1" is Mondays that are odd days of the month; "0 0 1,15 * 1" is
    the 1st, the 15th and every Monday."""
    fields = expr.split()
    if len(fields) < 5:  # an @alias: one of the two fields is '*'
        return False
    return not fields[2].startswith(("*", "?")) and not fields[4].startswith(("*", "?"))


def _normalize(expr: str) -> str:
    def single(match: re.Match[str]) -> str:
        low, high = match.group(1).lower(), match.group(2).lower()
        same = low == high or (low.isdigit() and high.isdigit() and int(low) == int(high))
        return low if same else match.group(0)

    return _RANGE.sub(single, expr.strip())


def _settled(t: Micros, wall_us: Micros, zone: ZoneInfo) -> bool:
    """True if no wall time later than `wall_us` can map to an instant <= t.

    A later wall time L maps to an instant u = L - (offset in force at u), or for a shifted gap
    time to L - (the smaller offset before the jump), so u >= L - MAX always. If the offset is
    constant, c, over [min(wall - MAX, t), t], any u in that range is >= L - c > wall - c >= t,
    and no u lies below it. Two transitions cancelling within that window would fool the
    endpoint comparison; no zone has one.
    """
    c = _offset(t, zone)
    if wall_us - c < t:
        return False
    return _offset(min(wall_us - _MAX_OFFSET, t), zone) == c


def _instants(wall: datetime, zone: ZoneInfo, schedule: Schedule) -> list[tuple[int, bool, bool]]:
    """(instant, dst_gap, dst_fold) for one naive wall time, per the schedule's DST policies."""
    wall_us = (wall - _EPOCH_NAIVE) // _MICRO
    first = wall.replace(tzinfo=zone, fold=0).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert first is not None and second is not None
    off0, off1 = first // _MICRO, second // _MICRO
    if off0 == off1:
        return [(wall_us - off0, False, False)]
    if off0 < off1:
        # In a gap fold=0 applies the offset from before the jump (PEP 495): the wall time
        # moved forward by the gap length.
        if schedule.dst_gap_policy == DstGapPolicy.SKIP:
            return []
        return [(wall_us - off0, True, False)]
    policy = schedule.dst_fold_policy
    earlier, later = (wall_us - off0, False, True), (wall_us - off1, False, True)
    if policy == DstFoldPolicy.FIRST:
        return [earlier]
    if policy == DstFoldPolicy.SECOND:
        return [later]
    return [earlier, later]


def _pop_fire(pending: list[tuple[int, bool, bool]], zone: ZoneInfo) -> Fire:
    time, gap, fold = heapq.heappop(pending)
    while pending and pending[0][0] == time:
        _, more_gap, more_fold = heapq.heappop(pending)
        gap, fold = gap or more_gap, fold or more_fold
    return Fire(time, _local(time, zone), gap, fold)


def _local(time: Micros, zone: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(microseconds=time)).astimezone(zone)


def _naive(time: Micros) -> datetime:
    return _EPOCH_NAIVE + timedelta(microseconds=time)


def _offset(time: Micros, zone: ZoneInfo) -> Micros:
    offset = _local(time, zone).utcoffset()
    assert offset is not None
    return offset // _MICRO


def local_time(time: Micros, schedule: Schedule) -> datetime:
    """`time` as an aware wall time in the schedule's zone (UTC when it has none)."""
    return _local(time, ZoneInfo(schedule.time_zone or "UTC"))
