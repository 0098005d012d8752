"""Hypothesis strategies for any protobuf message, built from its descriptor.

Every field may be left unset or get a value of its type; the values mix ordinary ones with
the edges that break servers: times outside google.protobuf.Timestamp, durations of 2^62 s,
NaN and infinities, U+0000, megabyte strings, deeply nested JSON, unknown enum numbers.
Strings named like ids, zones, crons, URLs or page tokens also draw from a pool of real
values (`Pool`), so requests reach past NOT_FOUND into the code behind it.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
TS_MIN, TS_MAX = -62_135_596_800, 253_402_300_799  # google.protobuf.Timestamp's seconds range
DURATION_MAX = 315_576_000_000
NOW = int(time.time())

SPECIAL_TEXT = [
    "",
    "\x00",
    "acme\x00x",
    "a\nb",
    "\u202e",
    "é",
    "default",
    "x" * 129,
    "x" * 300,
    "x" * 70_000,
]
HUGE_TEXT = "i" * 1_000_000  # only in id-like fields: the "1 MB id"
ZONES = ["UTC", "America/New_York", "Asia/Tokyo", "Pacific/Kiritimati", "America", "Etc", "x" * 300]
CRONS = [
    "* * * * *",
    "0 0 1 1 *",
    "0 0 31 2 *",
    "*/5 * * * * 30",
    "@hourly",
    "@nope",
    "0 0 * * 1-5",
    "61 * * * *",
    "* * * * * * *",
    "0-0 0 29 2 *",
]
URLS = ["https://example.invalid/hook", "http://127.0.0.1:1/x", "ftp://x", "http://", "x" * 300]
SECRETS = ["whsec_" + base64.b64encode(b"0123456789abcdef").decode(), "whsec_", "nope"]
INTS = [0, 1, -1, 2, 1000, 1001, 2**31 - 1, -(2**31), 2**53 + 1, 2**62, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.0, 0.5, 1e300, -1e300, float("nan"), float("inf"), float("-inf"), 2.0**64]


@dataclass
class Pool:
    """Real values of the server under test, for fields that name things."""

    ids: list[str] = field(default_factory=lambda: ["00000000-0000-7000-8000-000000000000"])
    worker_ids: list[str] = field(default_factory=lambda: ["fuzz-worker"])
    names: list[str] = field(default_factory=lambda: ["default", "fuzz", "test.echo"])
    page_tokens: list[str] = field(default_factory=list)
    # Draw only values the server should accept (to reach the code behind validation).
    tame: bool = False


def _forged_tokens() -> list[str]:
    def enc(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    return [
        "!!!",
        enc(b"not json"),
        enc(json.dumps({"k": 2**70, "s": "0" * 16}).encode()),
        enc(json.dumps({"k": -1, "s": "0" * 16}).encode()),
        enc(json.dumps({"k": True, "s": 1}).encode()),
        enc(b"[" * 100_000),
        enc(b'{"k":' * 5_000),
        "A" * 10_000,
    ]


TAME_TEXT = st.sampled_from(["a", "fuzz", "acme", "acme x", "é"])


def _tame_text(name: str, pool: Pool) -> st.SearchStrategy[str]:
    table: dict[str, st.SearchStrategy[str]] = {
        "time_zone": st.sampled_from(ZONES[:4]),
        "cron": st.sampled_from([CRONS[0], CRONS[1], CRONS[3], CRONS[4], CRONS[6]]),
        "url": st.just(URLS[0]),
        "secret": st.just(SECRETS[0]),
        "page_token": st.sampled_from(["", *pool.page_tokens]),
        "method": st.sampled_from(["GET", "POST"]),
        "worker_id": st.sampled_from(pool.worker_ids),
    }
    if name in ("id", "job_id", "ids"):
        return st.sampled_from(pool.ids)
    if name in ("queue", "queues", "task", "tasks", "name"):
        return st.sampled_from(pool.names)
    return table.get(name, TAME_TEXT)


def _text(name: str, pool: Pool) -> st.SearchStrategy[str]:
    if pool.tame:
        return _tame_text(name, pool)
    plain = st.one_of(st.text(max_size=24), st.sampled_from(SPECIAL_TEXT))
    if name in ("id", "job_id", "ids", "idempotency_key"):
        return st.one_of(st.sampled_from(pool.ids), st.just(HUGE_TEXT), plain)
    if name == "worker_id":
        return st.one_of(st.sampled_from(pool.worker_ids), st.just(HUGE_TEXT), plain)
    if name in ("queue", "queues", "task", "tasks", "name"):
        return st.one_of(st.sampled_from(pool.names), plain)
    if name == "time_zone":
        return st.one_of(st.sampled_from(ZONES), plain)
    if name == "cron":
        return st.one_of(st.sampled_from(CRONS), plain)
    if name == "url":
        return st.one_of(st.sampled_from(URLS), plain)
    if name == "secret":
        return st.one_of(st.sampled_from(SECRETS), plain)
    if name == "page_token":
        return st.one_of(st.sampled_from(pool.page_tokens + _forged_tokens()), plain)
    if name == "method":
        return st.one_of(st.sampled_from(["GET", "post", "TRACE"]), plain)
    return plain


def _seconds(low: int, high: int, near: int) -> st.SearchStrategy[int]:
    edges = [low - 1, low, high, high + 1, 2**62, -(2**62), INT64[0], INT64[1], near]
    return st.one_of(
        st.integers(near - 10**6, near + 10**8), st.sampled_from(edges), st.integers(*INT64)
    )


def _nanos() -> st.SearchStrategy[int]:
    return st.one_of(
        st.just(0), st.integers(0, 999_999_999), st.sampled_from([-1, 10**9, -(10**9)])
    )


def _json(depth_edges: bool) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(FLOATS),
        st.text(max_size=12),
        st.sampled_from(SPECIAL_TEXT[:6]),
    )
    tree = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    if not depth_edges:
        return tree
    deep = st.sampled_from([19, 20, 21, 31, 32, 40]).map(_nested)
    return st.one_of(tree, deep)


def _nested(depth: int) -> Any:
    doc: Any = 1
    for i in range(depth - 1):
        doc = {"a": doc} if i % 2 else [doc]
    return {"a": doc}


def _set_value(target: struct_pb2.Value, data: Any) -> None:
    # Value's own setters: ParseDict would refuse NaN, which is exactly what we want sent.
    if data is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        target.bool_value = data
    elif isinstance(data, int | float):
        target.number_value = float(data)
    elif isinstance(data, str):
        target.string_value = data
    elif isinstance(data, list):
        target.list_value.SetInParent()
        for item in data:
            _set_value(target.list_value.values.add(), item)
    else:
        target.struct_value.SetInParent()
        for key, item in data.items():
            _set_value(target.struct_value.fields[key], item)


def _struct_of(data: Any) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    doc = data if isinstance(data, dict) else {"v": data}
    for key, item in doc.items():
        _set_value(out.fields[key], item)
    return out


def _value_of(data: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    _set_value(out, data)
    return out


def _tame_json() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.booleans(), st.integers(-5, 5), st.sampled_from(["acme", "x"]))
    return st.dictionaries(st.sampled_from(["a", "k", "customer"]), scalars, max_size=3)


def _well_known(desc: Descriptor, tame: bool) -> st.SearchStrategy[Message] | None:
    cls = message_factory.GetMessageClass(desc)
    name = desc.full_name
    if tame and name == "google.protobuf.Timestamp":
        return st.integers(NOW + 120, NOW + 10**6).map(lambda s: cls(seconds=s))
    if tame and name == "google.protobuf.Duration":
        return st.integers(1, 3600).map(lambda s: cls(seconds=s))
    if tame and name == "google.protobuf.Struct":
        return _tame_json().map(_struct_of)
    if tame and name == "google.protobuf.Value":
        return _tame_json().map(_value_of)
    if name == "google.protobuf.Timestamp":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n), _seconds(TS_MIN, TS_MAX, NOW), _nanos()
        )
    if name == "google.protobuf.Duration":
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            _seconds(-DURATION_MAX, DURATION_MAX, 30),
            _nanos(),
        )
    if name == "google.protobuf.Struct":
        return _json(True).map(_struct_of)
    if name == "google.protobuf.Value":
        return _json(True).map(_value_of)
    return None


def _scalar(f: FieldDescriptor, pool: Pool) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return _text(f.name, pool)
    if pool.tame and t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in f.enum_type.values if v.number])
    if pool.tame and t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from([0.0, 0.5, 1.0, 2.0])
    if pool.tame and t not in (FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_BYTES):
        return st.integers(0, 5)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(FLOATS))
    if t == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(*INT32))
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return st.one_of(st.sampled_from(INTS), st.integers(*INT64))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    small = [i for i in INTS if INT32[0] <= i <= INT32[1]]
    return st.one_of(st.sampled_from(small), st.integers(*INT32))


def messages(desc: Descriptor, pool: Pool, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of type `desc`: any subset of fields set, nested messages up to 4 deep."""
    known = _well_known(desc, pool.tame)
    if known is not None:
        return known
    cls = message_factory.GetMessageClass(desc)
    fields = list(desc.fields)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for f in fields:
            if not draw(st.booleans()):
                continue
            _fill(draw, msg, f, pool, depth)
        return msg

    return build()


def _fill(draw: st.DrawFn, msg: Message, f: FieldDescriptor, pool: Pool, depth: int) -> None:
    is_message = f.type == FieldDescriptor.TYPE_MESSAGE
    if is_message and f.message_type.GetOptions().map_entry:
        key_f, value_f = (
            f.message_type.fields_by_name["key"],
            f.message_type.fields_by_name["value"],
        )
        target = getattr(msg, f.name)
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_scalar(key_f, pool))
            if value_f.type == FieldDescriptor.TYPE_MESSAGE:
                target[key].CopyFrom(draw(messages(value_f.message_type, pool, depth + 1)))
            else:
                target[key] = draw(_scalar(value_f, pool))
        return
    if is_message and depth >= 4:
        return
    if f.is_repeated:
        target = getattr(msg, f.name)
        for _ in range(draw(st.integers(0, 3))):
            if is_message:
                target.add().CopyFrom(draw(messages(f.message_type, pool, depth + 1)))
            else:
                target.append(draw(_scalar(f, pool)))
        return
    if is_message:
        getattr(msg, f.name).CopyFrom(draw(messages(f.message_type, pool, depth + 1)))
    else:
        setattr(msg, f.name, draw(_scalar(f, pool)))


RAW_BODIES = [
    b"not protobuf at all",
    b"\xff" * 16,
    b"\x0a\xff\xff\xff\xff\x0f",  # field 1, length far past the end
    b"\x0a\x02\xc3\x28",  # field 1 (a string in most requests) holding invalid UTF-8
    b'{"id": "x"}',
    b"\x08" + b"\xff" * 11,  # a varint of eleven bytes
    b"\x0a" * 200,
    b"\x32\x00" * 10 + b"\x07",  # a wire type that does not exist
]


def raw_bodies() -> st.SearchStrategy[bytes]:
    """Request bodies that are mostly not protobuf (random bytes sometimes happen to be)."""
    deep = [deep_body(n) for n in (50, 200, 2000)]
    return st.one_of(st.binary(max_size=64), st.sampled_from([*RAW_BODIES, *deep]))


def deep_body(levels: int) -> bytes:
    """Field 1 as a length-delimited field `levels` deep (deeper than any parser allows)."""
    body = b""
    for _ in range(levels):
        body = b"\x0a" + varint(len(body)) + body
    return body


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
