"""Table tests of input limits: each row a call and the status it must earn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from tests.api.helpers import field_violations

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DAY = 86_400


@dataclass(frozen=True)
class Row:
    """`call()` must end with `code`; for INVALID_ARGUMENT, naming `field` in its BadRequest."""

    name: str
    call: Callable[[], Awaitable[Any]]
    code: grpc.StatusCode
    field: str = ""


async def check_rows(rows: list[Row]) -> None:
    failures = []
    for row in rows:
        code, fields, text = OK, {}, ""
        try:
            await row.call()
        except grpc.aio.AioRpcError as err:
            code, text = err.code(), err.details() or ""
            if code == INVALID:
                fields = field_violations(err)
        if code != row.code or (row.field and row.field not in fields):
            failures.append(f"{row.name}: got {code.name} {sorted(fields)} {text[:200]!r}")
        # errors quote at most a short prefix of any input
        if len(text) > 2000 or any(len(d) > 300 for d in fields.values()):
            failures.append(f"{row.name}: status too long ({len(text)} characters)")
    assert not failures, "\n".join(failures)


def at(year: int, month: int = 1, day: int = 1, hour: int = 0) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(datetime(year, month, day, hour, tzinfo=UTC))
    return out


def raw_ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def secs(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def doc(data: Any) -> struct_pb2.Struct:
    """A Struct holding `data` as given (NaN included: Struct.update does not check)."""
    out = struct_pb2.Struct()
    out.update(data)
    return out


def nested(depth: int) -> dict[str, Any]:
    """A JSON object `depth` levels deep, objects and arrays alternating."""
    inner: Any = 1
    for i in range(depth - 1):
        inner = [inner] if i % 2 else {"a": inner}
    return {"a": inner}
