"""A schedule's own consistency rules, checked on the model (pure).

The API checks the wire form (lengths, timestamp and duration ranges, enum values) and maps
each Problem's field to the request's path (e.g. "jobs[3].schedule.cron").
"""

from __future__ import annotations

from dataclasses import dataclass

from jobwheel.server.model import Micros, Schedule
from jobwheel.server.rules import triggers


@dataclass(frozen=True, slots=True)
class Problem:
    field: str  # the Schedule field at fault, e.g. "cron"
    message: str


def problems(schedule: Schedule, now: Micros) -> list[Problem]:
    """Every rule `schedule` breaks: a cron expression or time zone croniter and the IANA
    database do not know, cron and interval together, a negative limit, an end not after
    the start (`now`, in µs, without a start time), a limit or end on a one-off schedule."""
    out: list[Problem] = []
    if schedule.time_zone and (why := triggers.validate_time_zone(schedule.time_zone)):
        out.append(Problem("time_zone", why))
    if schedule.cron and (why := triggers.validate_cron(schedule.cron)):
        out.append(Problem("cron", why))
    if schedule.cron and schedule.interval is not None:
        out.append(Problem("interval", "set cron or interval, not both"))
    if schedule.limit < 0:
        out.append(Problem("limit", "must not be negative"))
    end = schedule.end_time
    if end is not None and end <= (schedule.start_time if schedule.start_time is not None else now):
        out.append(Problem("end_time", "must be after the start time"))
    if not schedule.recurring:
        if schedule.limit:
            out.append(Problem("limit", "only applies to a cron or interval schedule"))
        if schedule.end_time is not None:
            out.append(Problem("end_time", "only applies to a cron or interval schedule"))
    return out
