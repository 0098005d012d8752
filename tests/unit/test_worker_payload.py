"""The worker SDK's payload conversion equals json_format's, with whole numbers as int."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from jobwheel.client.worker import payload_of


def plain_numbers(data: Any) -> Any:
    if isinstance(data, float) and data.is_integer() and abs(data) <= 2**53:
        return int(data)
    if isinstance(data, dict):
        return {k: plain_numbers(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain_numbers(v) for v in data]
    return data


def test_payload_of_equals_message_to_dict() -> None:
    doc = {
        "s": "ada",
        "whole": 5,
        "half": 2.5,
        "big": 2.0**60,
        "neg": -3,
        "t": True,
        "f": False,
        "none": None,
        "list": [1, "x", None, [2.0, {"k": 0.25}], {}],
        "nested": {"a": {"b": [True, 7]}, "empty": []},
    }
    payload = struct_pb2.Struct()
    payload.update(doc)
    got = payload_of(payload)
    assert got == plain_numbers(json_format.MessageToDict(payload))
    assert type(got["whole"]) is int and type(got["big"]) is float
    assert got["list"][3][0] == 2 and type(got["list"][3][0]) is int
    assert payload_of(struct_pb2.Struct()) == {}
