"""Values as the pages show them: times, ages, durations, JSON. Registered as Jinja filters;
Jinja's autoescape escapes whatever they return."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jobwheel.server import model

SECOND = model.SECOND


def utc(micros: int | None) -> str:
    """'2026-11-29 10:17:22Z', or '' for None."""
    if micros is None:
        return ""
    return datetime.fromtimestamp(micros / SECOND, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def span(micros: int | None) -> str:
    """A duration in its largest units: '850 ms', '12.4 s', '3 m 05 s', '2 h 10 m', '4 d 3 h'."""
    if micros is None:
        return ""
    negative, micros = micros < 0, abs(micros)
    if micros < SECOND:
        text = f"{micros / 1000:.0f} ms"
    elif micros < 60 * SECOND:
        text = f"{micros / SECOND:.1f} s"
    else:
        seconds = micros // SECOND
        minutes, s = divmod(seconds, 60)
        hours, m = divmod(minutes, 60)
        days, h = divmod(hours, 24)
        if days:
            text = f"{days} d {h} h" if h else f"{days} d"
        elif hours:
            text = f"{hours} h {m:02d} m" if m else f"{hours} h"
        else:
            text = f"{minutes} m {s:02d} s" if s else f"{minutes} m"
    return f"-{text}" if negative else text


def relative(micros: int | None, now: int) -> str:
    """'in 5.0 s', '3 m 02 s ago' or ''."""
    if micros is None:
        return ""
    delta = micros - now
    if abs(delta) < SECOND:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(-delta)} ago"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def short_id(job_id: str) -> str:
    """The tail of a UUIDv7, which differs between jobs created in the same millisecond."""
    return job_id[-12:] if len(job_id) > 12 else job_id


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def schedule_text(schedule: model.Schedule | None) -> str:
    if schedule is None:
        return "once, now"
    if schedule.cron:
        zone = schedule.time_zone or "UTC"
        return f"cron {schedule.cron} ({zone})"
    if schedule.interval is not None:
        return f"every {span(schedule.interval)}"
    if schedule.start_time is not None:
        return f"once, at {utc(schedule.start_time)}"
    return "once, now"


FILTERS = {
    "utc": utc,
    "span": span,
    "pretty_json": pretty_json,
    "short_id": short_id,
    "schedule_text": schedule_text,
    "percent": percent,
}
