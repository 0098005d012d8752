"""Checks that every request field goes through: characters, lengths, times, JSON documents.

These are the limits the proto comments promise:

- No string holds U+0000 (PostgreSQL cannot store it, SQLite's JSON functions stop at it).
  Identifiers (ids, names, label keys and values, idempotency keys, worker ids, zones, crons,
  URLs, header values, secrets) hold no control character at all: U+0000-U+001F and
  U+007F-U+009F.
- A Timestamp lies in 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z and a Duration
  within +/-315,576,000,000 s (the ranges of google.protobuf.Timestamp and Duration, which
  every client can decode), nanos of the same sign and below one second.
- A JSON document (Struct, Value) nests objects and arrays at most MAX_JSON_DEPTH deep and
  holds finite numbers only (no NaN or Infinity).

Each check records a field violation and quotes at most a short prefix of the input.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict
from jobwheel.server.api.errors import FieldViolation, InvalidArgument, quote
from jobwheel.server.json_rules import MAX_JSON_DEPTH, NUL, json_problem
from jobwheel.server.model import MAX_TIME, MIN_TIME, SECOND, Micros

MAX_DURATION: Micros = 315_576_000_000 * SECOND
_NUL = NUL
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_TIME_RANGE = "0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"


class Violations:
    """Field violations collected over a whole request, raised together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def check_text(
    value: str,
    field: str,
    errors: Violations,
    *,
    max_chars: int,
    identifier: bool = False,
    required: bool = False,
) -> bool:
    """`value` is at most `max_chars` characters without U+0000 (for an identifier: without
    any control character); True when it passed."""
    if not value:
        if required:
            errors.add(field, "is required")
        return not required
    if len(value) > max_chars:
        errors.add(field, f"is longer than {max_chars} characters")
        return False
    if identifier and (bad := _CONTROL.search(value)):
        errors.add(field, f"holds the control character U+{ord(bad.group()):04X}")
        return False
    if _NUL in value:
        errors.add(field, "holds the character U+0000")
        return False
    return True


def micros_of_timestamp(
    ts: timestamp_pb2.Timestamp, field: str, errors: Violations
) -> Micros | None:
    """A Timestamp as µs since the epoch; None (with a violation) outside Timestamp's range."""
    if not 0 <= ts.nanos < 1_000_000_000:
        errors.add(field, "nanos must be between 0 and 999,999,999")
        return None
    micros = ts.seconds * SECOND + ts.nanos // 1_000
    if not MIN_TIME <= micros <= MAX_TIME:
        errors.add(field, f"must be between {_TIME_RANGE}")
        return None
    return micros


def micros_of_duration(
    d: duration_pb2.Duration,
    field: str,
    errors: Violations,
    *,
    low: Micros = 0,
    high: Micros = MAX_DURATION,
) -> Micros | None:
    """A Duration as µs within [low, high]; None (with a violation) otherwise."""
    if (d.seconds < 0 < d.nanos) or (d.nanos < 0 < d.seconds) or abs(d.nanos) >= 1_000_000_000:
        errors.add(field, "malformed duration: seconds and nanos must have the same sign")
        return None
    micros = d.seconds * SECOND + int(d.nanos / 1_000)
    if micros < low:
        errors.add(field, "must not be negative" if low == 0 else f"must be at least {span(low)}")
        return None
    if micros > high:
        errors.add(field, f"must be at most {span(high)}")
        return None
    return micros


def span(us: Micros) -> str:
    """A duration for an error message: "1s", "3600s", "366 days"."""
    days, rest = divmod(us, 86_400 * SECOND)
    if days and not rest:
        return f"{days} day{'s' if days > 1 else ''}"
    return f"{us / SECOND:g}s"


def json_data(
    doc: struct_pb2.Struct | struct_pb2.Value, field: str, errors: Violations
) -> tuple[bool, Any]:
    """(True, the document as Python data) if it nests at most MAX_JSON_DEPTH deep, its numbers
    are finite and its strings and keys hold no U+0000; else (False, None) and a violation."""
    fast = plain_json(doc)
    if fast is not None:
        return True, fast[0]
    try:
        data = MessageToDict(doc)
    except ValueError:  # json_format refuses NaN and Infinity (they are not JSON)
        errors.add(field, "holds NaN or Infinity (not JSON)")
        return False, None
    # the parser bounds the nesting (100 messages), so recursion is bounded too
    found = json_problem(data)
    if found is None:
        return True, data
    problem, path = found
    where = "".join(p if p.startswith("[") else f".{quote(p, 20)}" for p in path[:8])
    more = "..." if len(path) > 8 else ""
    errors.add(field, f"{problem} at ${where}{more}" if path else problem)
    return False, None


class _Refused(Exception):
    """The fast walk met something json_data refuses (or would have to explain)."""


_INF = float("inf")


def plain_json(doc: struct_pb2.Struct | struct_pb2.Value, whole_ints: bool = False) -> Any:
    """(data, canonical) for a document that passes json_data's rules, else None (then
    json_data names the problem). `data` is what MessageToDict gives, walked in one pass
    (json_format's walk costs ~10x more); with `whole_ints` whole numbers up to 2**53 are ints.
    `canonical`: converting `data` back gives the same message (no unset Value, no -0.0)."""
    state = [True]
    try:
        if isinstance(doc, struct_pb2.Struct):
            data: Any = _plain_struct(doc, 0, whole_ints, state)
        else:
            data = _plain_value(doc, 0, whole_ints, state)
    except _Refused:
        return None
    return data, state[0]


def _plain_struct(
    s: struct_pb2.Struct, depth: int, whole: bool, state: list[bool]
) -> dict[str, Any]:
    if depth >= MAX_JSON_DEPTH:
        raise _Refused
    out: dict[str, Any] = {}
    fields = s.fields
    for key in fields:  # keys, then look-ups: the map's items() is a slow Python view
        if _NUL in key:
            raise _Refused
        value = fields[key]
        kind = value.WhichOneof("kind")
        # strings and numbers (most values) inline: a call each costs as much as its checks
        if kind == "string_value":
            text = value.string_value
            if _NUL in text:
                raise _Refused
            out[key] = text
        elif kind == "number_value":
            out[key] = _number(value.number_value, whole, state)
        else:
            out[key] = _plain_value(value, depth + 1, whole, state)
    return out


def _plain_value(v: struct_pb2.Value, depth: int, whole: bool, state: list[bool]) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        text = v.string_value
        if _NUL in text:
            raise _Refused
        return text
    if kind == "number_value":
        return _number(v.number_value, whole, state)
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return _plain_struct(v.struct_value, depth, whole, state)
    if kind == "list_value":
        if depth >= MAX_JSON_DEPTH:
            raise _Refused
        return [_plain_value(item, depth + 1, whole, state) for item in v.list_value.values]
    if kind is None:
        state[0] = False
    return None


def _number(x: float, whole: bool, state: list[bool]) -> float | int:
    if x != x or x == _INF or x == -_INF:
        raise _Refused
    if x == 0.0 and str(x)[0] == "-":
        state[0] = False
    if whole and x.is_integer() and -(2**53) <= x <= 2**53:
        return int(x)
    return x
