"""The enqueue fast paths give what the general conversions give: payload documents walked in
one pass, batches of plain jobs validated by quick checks, reply messages of created jobs built
from templates (as messages and as bytes), payload text from the faster encoder."""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server.api import validate
from jobwheel.server.api.batch_validate import new_jobs_from_batch
from jobwheel.server.api.convert import CreatedJobs, job_to_proto
from jobwheel.server.api.fields import (
    MAX_JSON_DEPTH,
    Violations,
    json_data,
    plain_json,
)
from jobwheel.server.config import Settings
from jobwheel.server.json_rules import json_problem
from jobwheel.server.storage.convert import job_from_new, payload_text
from jobwheel.server.storage.dialect import dumps
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

LIMITS = validate.Limits(Settings().max_payload_bytes)

NOW = 1_700_000_000_123_456

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5.0, 2.0**53, 2.0**53 + 2, -(2.0**60), 1.5]),
    st.text(alphabet=st.sampled_from("ab\x00é")),
    st.just("unset"),  # a Value with no kind set
)


def _value(data: Any) -> struct_pb2.Value:
    v = struct_pb2.Value()
    if data == "unset":
        return v
    if data is None:
        v.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        v.bool_value = data
    elif isinstance(data, float):
        v.number_value = data
    elif isinstance(data, str):
        v.string_value = data
    elif isinstance(data, dict):
        v.struct_value.CopyFrom(_struct(data))
    else:
        v.list_value.values.extend(_value(item) for item in data)
    return v


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    for key, item in data.items():
        s.fields[key].CopyFrom(_value(item))
    return s


documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from("kx\x00"), max_size=2), inner, max_size=3
        )
    ),
    max_leaves=12,
)


def _reference(doc: struct_pb2.Struct | struct_pb2.Value) -> tuple[bool, Any]:
    """json_data as it was before the one-pass walk: MessageToDict, then the rules."""
    try:
        data = MessageToDict(doc)
    except ValueError:
        return False, None
    return json_problem(data) is None, data


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet="ab\x00", max_size=2), documents, max_size=4))
def test_one_pass_walk_agrees_with_message_to_dict(data: dict[str, Any]) -> None:
    doc = _struct(data)
    ok, expected = _reference(doc)
    fast = plain_json(doc)
    assert (fast is not None) == ok
    if fast is not None:
        assert _same(fast[0], expected)
        assert json_data(doc, "payload", Violations()) == (True, fast[0])
        # canonical: the stored data converts back to this very message
        back = struct_pb2.Struct()
        back.update(plain_json(doc, whole_ints=True)[0])
        assert fast[1] == (
            back.SerializeToString(deterministic=True) == doc.SerializeToString(deterministic=True)
        )


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats compared by bits (-0.0 is not 0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.copysign(1, a) == math.copysign(1, b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def test_nesting_limit_is_the_same_on_both_paths() -> None:
    data: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH - 1):
        data = {"k": data}
    assert plain_json(_struct(data)) is not None
    assert plain_json(_struct({"k": [data]})) is None
    assert not json_data(_struct({"k": [data]}), "p", Violations())[0]


def _requests() -> list[pb.EnqueueJobRequest]:
    payload = _struct({"to": "ada@example.com", "n": 5.0, "neg": -0.0, "none": None})
    odd = _struct({"unset": "unset", "deep": {"x": [1.5, True]}})
    return [
        pb.EnqueueJobRequest(task="t"),
        pb.EnqueueJobRequest(task="t", payload=_struct({"n": 5.0, "s": "x", "l": [1.0]})),
        pb.EnqueueJobRequest(task="t", payload=payload, labels={"a": "b", "c": "d"}),
        pb.EnqueueJobRequest(task="t", payload=odd, queue="q", priority=7, idempotency_key="k"),
        pb.EnqueueJobRequest(
            task="t",
            retry_policy=job_pb2.RetryPolicy(
                max_attempts=3, initial_backoff=duration_pb2.Duration(seconds=2), jitter=0.0
            ),
            timeout=duration_pb2.Duration(seconds=10, nanos=5000),
        ),
        pb.EnqueueJobRequest(
            task="t", schedule=job_pb2.Schedule(delay=duration_pb2.Duration(seconds=30))
        ),
        pb.EnqueueJobRequest(
            task="t",
            schedule=job_pb2.Schedule(
                start_time=timestamp_pb2.Timestamp(seconds=1_800_000_000), cron="*/5 * * * *"
            ),
        ),
        pb.EnqueueJobRequest(
            task="t", schedule=job_pb2.Schedule(interval=duration_pb2.Duration(seconds=60))
        ),
        pb.EnqueueJobRequest(
            http=job_pb2.HttpTarget(url="https://example.com/hook", headers={"X-A": "1"})
        ),
    ]


@pytest.mark.parametrize("shared", [False, True], ids=["fresh", "shared-templates"])
def test_created_job_messages_equal_the_general_conversion(shared: bool) -> None:
    created = CreatedJobs()
    for _ in range(2 if shared else 1):  # the second round reuses every template
        for i, req in enumerate(_requests()):
            errors = Violations()
            payloads: list[struct_pb2.Struct | None] = []
            new = validate.new_job_from_proto(req, "", NOW + i, LIMITS, errors, f"id-{i}", payloads)
            assert not errors.items
            built = (created if shared else CreatedJobs()).proto(new, payloads[0])
            expected = job_to_proto(job_from_new(new))
            assert built.SerializeToString(deterministic=True) == expected.SerializeToString(
                deterministic=True
            ), req


@pytest.mark.parametrize("shared", [False, True], ids=["fresh", "shared-templates"])
def test_encoded_results_equal_the_general_conversion(shared: bool) -> None:
    created = CreatedJobs()
    extra = [pb.EnqueueJobRequest(task="t", labels={"": "x", "k": "", "é": "ü"})]
    for _ in range(2 if shared else 1):
        for i, req in enumerate([*_requests(), *extra]):
            errors = Violations()
            payloads: list[struct_pb2.Struct | None] = []
            new = validate.new_job_from_proto(req, "", NOW + i, LIMITS, errors, f"id-{i}", payloads)
            encoded = (created if shared else CreatedJobs()).encoded([new, new], payloads * 2)
            reply = pb.BatchEnqueueJobsResponse.FromString(encoded)
            expected = job_to_proto(job_from_new(new))
            assert len(encoded) == reply.ByteSize()  # the reply size check counts on it
            for result in reply.results:
                assert not result.already_exists
                assert result.job.SerializeToString(
                    deterministic=True
                ) == expected.SerializeToString(deterministic=True), req


def _one_entry_maps() -> list[pb.EnqueueJobRequest]:
    """Requests of every kind whose maps (payload objects, labels, headers) hold at most one
    entry: the protobuf runtime writes larger maps in the order of its per-process seeded hash,
    so only these have one encoding."""
    nested = _struct({"a": {"b": [1.5, "x", None, {"c": True}]}})
    return [
        pb.EnqueueJobRequest(task="t"),
        pb.EnqueueJobRequest(task="t", payload=_struct({"n": 5.0})),
        pb.EnqueueJobRequest(task="t", payload=nested, labels={"a": "b"}, idempotency_key="k"),
        pb.EnqueueJobRequest(task="t", queue="q", priority=7, labels={"k": ""}),
        *(req for req in _requests() if req.HasField("schedule") or req.HasField("timeout")),
        pb.EnqueueJobRequest(
            http=job_pb2.HttpTarget(url="https://example.com/hook", headers={"X-A": "1"}),
            payload=_struct({"k": "v"}),
            labels={"l": "v"},
        ),
    ]


def test_encoded_results_are_the_runtimes_encoding() -> None:
    """The reply goes out as built: byte for byte what serializing the parsed reply gave."""
    created = CreatedJobs()
    for _ in range(2):  # the second round reuses every template
        for i, req in enumerate(_one_entry_maps()):
            errors = Violations()
            payloads: list[struct_pb2.Struct | None] = []
            new = validate.new_job_from_proto(req, "", NOW + i, LIMITS, errors, f"id-{i}", payloads)
            assert not errors.items
            encoded = created.encoded([new, new], payloads * 2)
            assert pb.BatchEnqueueJobsResponse.FromString(encoded).SerializeToString() == encoded


def _batch_cases() -> list[pb.EnqueueJobRequest]:
    big = struct_pb2.Struct()
    big.update({"x": "y" * (LIMITS.max_payload_bytes + 1)})
    nul = struct_pb2.Struct()
    nul.update({"a\x00": 1})
    return [
        *_requests(),
        pb.EnqueueJobRequest(task="t", queue="q", labels={"team": "a"}, idempotency_key="k1"),
        pb.EnqueueJobRequest(task=""),
        pb.EnqueueJobRequest(task="bad name"),
        pb.EnqueueJobRequest(task="t", queue="bad queue"),
        pb.EnqueueJobRequest(task="t", payload=big),
        pb.EnqueueJobRequest(task="t", payload=nul),
        pb.EnqueueJobRequest(task="t", labels={"bad key": "v", "k": "\x01"}),
        pb.EnqueueJobRequest(task="t", idempotency_key="k\x02"),
        pb.EnqueueJobRequest(task="t", idempotency_key="k" * 256),
        pb.EnqueueJobRequest(task="t", labels={"l": "v" * 70_000}),
        pb.EnqueueJobRequest(task="t", timeout=duration_pb2.Duration(seconds=-1)),
    ]


def test_batch_validation_equals_new_job_from_proto() -> None:
    reqs = _batch_cases()
    ids = [f"id-{i}" for i in range(len(reqs))]
    errors, payloads = Violations(), list[struct_pb2.Struct | None]()
    news = new_jobs_from_batch(reqs, ids, NOW, LIMITS, errors, payloads)
    expected_errors, expected_payloads = Violations(), list[struct_pb2.Struct | None]()
    expected = [
        validate.new_job_from_proto(
            req, f"jobs[{i}].", NOW, LIMITS, expected_errors, ids[i], expected_payloads
        )
        for i, req in enumerate(reqs)
    ]
    assert news == expected
    assert [p is None for p in payloads] == [p is None for p in expected_payloads]
    assert [p for p in payloads if p is not None] == [p for p in expected_payloads if p is not None]
    assert errors.items == expected_errors.items
    assert len({v.field.split(".")[0] for v in errors.items}) >= 9  # each bad job is named


flat_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300)
@given(st.dictionaries(st.text(), flat_values, max_size=6))
def test_payload_text_is_dumps(payload: dict[str, Any]) -> None:
    assert payload_text(payload) == dumps(payload)
