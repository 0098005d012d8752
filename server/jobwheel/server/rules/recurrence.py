"""Which occurrence of a recurring job runs next (pure: time and randomness passed in).

Two situations leave occurrences in the past:

- misfire: the job came due while nothing could run it (server down, job paused). When it is
  found late, `catch_up` applies its misfire policy: SKIP runs none of the missed occurrences,
  RUN_ONCE runs one for all of them, RUN_ALL runs each one within `catchup_window`.
- overlap: occurrences came due while the previous execution was still running. When that
  execution ends, `after_execution` applies the overlap policy: SKIP drops them, BUFFER_ONE
  runs one at once. ALLOW_ALL and CANCEL_OTHER act while the execution runs
  (execution/overlap.py): ALLOW_ALL ran them as child jobs, CANCEL_OTHER cut the execution
  short so that the newest one runs at once.

Dropped occurrences are counted (`skipped`), so the job's `skipped_count` tells them.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobwheel.server.model import Job, MisfirePolicy, OverlapPolicy, Schedule, clamp_time
from jobwheel.server.model import Micros as Us
from jobwheel.server.rules import triggers

# Missed occurrences listed one by one at most (interval schedules are counted past it by
# arithmetic; cron schedules' counts stop at it)
MAX_MISSED = 10_000


@dataclass(frozen=True, slots=True)
class Next:
    """The next run: None when the schedule has ended; `skipped` occurrences dropped."""

    time: Us | None
    skipped: int = 0


def _exhausted(job: Job, schedule: Schedule) -> bool:
    return bool(schedule.limit) and job.execution_count >= schedule.limit


def _future(schedule: Schedule, now: Us, rand: float) -> Us | None:
    fires = triggers.next_fires(schedule, now, 1)
    return clamp_time(fires[0].time + int(schedule.jitter * rand)) if fires else None


def catch_up(job: Job, now: Us, rand: float) -> Next:
    """A recurring job whose next run time (`job.next_run_time`) passed long ago."""
    schedule = job.schedule
    assert schedule is not None and job.next_run_time is not None
    due = job.next_run_time
    later, last = triggers.missed(schedule, due, now, MAX_MISSED)
    missed = 1 + later  # `due` and those after it
    policy = schedule.misfire_policy
    if policy is MisfirePolicy.RUN_ALL:
        start = now - schedule.catchup_window
        if due >= start:
            return Next(due)
        first, within = _backlog(schedule, start - 1, now)
        if first is not None:
            return Next(first, missed - within)
    elif policy is MisfirePolicy.RUN_ONCE:
        return Next(due if last is None else last, missed - 1)
    return Next(_future(schedule, now, rand), missed)


def _backlog(schedule: Schedule, after: Us, now: Us) -> tuple[Us | None, int]:
    """The first occurrence in (after, now] and how many there are."""
    first = triggers.occurrences_between(schedule, after, now, 1)
    if not first:
        return None, 0
    return first[0].time, triggers.missed(schedule, after, now, MAX_MISSED)[0]


def after_execution(job: Job, now: Us, rand: float) -> Next:
    """The run after the execution of `job` (as claimed) that ends `now`."""
    schedule = job.schedule
    assert schedule is not None
    if _exhausted(job, schedule):
        return Next(None)
    # the occurrence this execution ran for: later ones are counted from it
    ran_for = job.next_run_time if job.next_run_time is not None else now
    overdue, last = triggers.missed(schedule, ran_for, now, MAX_MISSED)
    if last is None:
        return Next(_future(schedule, now, rand))
    if schedule.misfire_policy is MisfirePolicy.RUN_ALL:
        first, backlog = _backlog(schedule, max(ran_for, now - schedule.catchup_window - 1), now)
        if first is not None:  # still catching up after downtime: run the next one at once
            return Next(first, overdue - backlog)
    if schedule.overlap_policy is OverlapPolicy.SKIP:
        return Next(_future(schedule, now, rand), overdue)
    if schedule.overlap_policy is OverlapPolicy.ALLOW_ALL:
        # they ran alongside, as child jobs started at their time: nothing was dropped
        return Next(_future(schedule, now, rand))
    return Next(last, overdue - 1)
