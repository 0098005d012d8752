"""Stored documents read back by dialect.loads: the same value json.loads gives, for any text
`dumps` or json.dumps writes (big ints, NaN, infinities, -0.0, lone surrogates included)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server.storage.dialect import dumps, loads

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()  # past 64 bits too
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()  # NaN, infinities and -0.0 too
    | st.text()  # lone surrogates too
)
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _same(text: str) -> None:
    # dumps tells an int from a float, -0.0 from 0.0, and writes NaN
    assert dumps(loads(text)) == dumps(json.loads(text))


@settings(max_examples=400)
@given(_DOCS)
def test_reads_what_dumps_writes_as_json_loads_does(doc: Any) -> None:
    _same(dumps(doc))


@settings(max_examples=200)
@given(_DOCS)
def test_reads_escaped_and_spaced_text_as_json_loads_does(doc: Any) -> None:
    _same(json.dumps(doc))  # ASCII only: surrogates as \ud800 escapes, ", " and ": "


@pytest.mark.parametrize(
    "text",
    [
        "123456789012345678901234567890",  # orjson: a float
        "-9223372036854775809",
        '{"n": 18446744073709551616}',
        "1e400",
        "[NaN, Infinity, -Infinity]",
        '"\\ud800"',
        '{"phone": "12345678901234567890"}',  # digits in a string: json.loads, same value
        '{"a": 1, "a": 2}',
    ],
)
def test_texts_orjson_reads_otherwise(text: str) -> None:
    _same(text)


def test_malformed_text_raises_json_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads('{"a": ')
