"""Python values <-> protobuf well-known types, and the CLI's duration/time syntax."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

# A duration given as a timedelta, a number of seconds, or text such as "90s", "1h30m".
DurationLike: TypeAlias = "timedelta | float | int | str"
# An instant given as an aware (or local naive) datetime, or ISO 8601 text.
TimeLike: TypeAlias = "datetime | str"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """'90s', '5m', '2h', '1h30m', '1.5d', '250ms' or a bare number of seconds. Raises
    ValueError, for a duration past timedelta's range (about 2.7 million years) too."""
    s = text.strip().lower()
    try:
        return _seconds(float(s), text)
    except ValueError as err:
        if "too long" in str(err):
            raise
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not s or pos != len(s):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 5m, 2h, 1h30m)")
    return _seconds(total, text)


def _seconds(seconds: float, shown: object) -> timedelta:
    """timedelta(seconds=...), ValueError for what it cannot hold (inf and NaN among them)."""
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {shown!r} (a finite number of seconds)")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"not a duration: {shown!r} is too long") from None


def as_timedelta(value: DurationLike) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    return _seconds(value, value)


def to_duration(value: DurationLike) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(as_timedelta(value))
    return d


def parse_time(text: str) -> datetime:
    """ISO 8601; 'Z' is accepted and a time without an offset is local time."""
    s = text.strip()
    if s.lower() == "now":
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(s)
        return parsed if parsed.tzinfo else parsed.astimezone()
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2030-01-31T09:00:00Z)") from None
    except OverflowError:
        raise ValueError(f"not a time: {text!r} lies outside years 1-9999") from None


def as_datetime(value: TimeLike) -> datetime:
    if isinstance(value, str):
        return parse_time(value)
    # naive datetimes mean local time, like datetime.astimezone() does
    return value if value.tzinfo else value.astimezone()


def to_timestamp(value: TimeLike) -> timestamp_pb2.Timestamp:
    """Raises ValueError for a time outside years 1-9999 in UTC."""
    ts = timestamp_pb2.Timestamp()
    try:
        ts.FromDatetime(as_datetime(value).astimezone(UTC))
    except OverflowError:
        raise ValueError(f"not a time: {value!r} lies outside years 1-9999 in UTC") from None
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime | None:
    """An aware UTC datetime, or None for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def to_struct(value: Mapping[str, Any] | struct_pb2.Struct | None) -> struct_pb2.Struct:
    if isinstance(value, struct_pb2.Struct):
        return value
    s = struct_pb2.Struct()
    if value:
        update_struct(s, value)
    return s


def update_struct(s: struct_pb2.Struct, value: Mapping[str, Any]) -> None:
    """s.update(value); ValueError for what a Struct cannot hold (an integer past a double's
    range, nesting past protobuf's 100 levels)."""
    try:
        s.update(dict(value))
    except (OverflowError, RecursionError) as err:
        raise ValueError(f"not a JSON document a message can hold: {err}") from None


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def value_to_python(value: struct_pb2.Value) -> Any:
    """A google.protobuf.Value as plain JSON data (None when unset)."""
    if value.WhichOneof("kind") is None:
        return None
    return json_format.MessageToDict(value)
