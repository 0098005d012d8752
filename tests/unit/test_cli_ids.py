"""Job id prefixes on the command line: which texts are prefixes, and the creation-time span
a prefix allows (UUIDv7 ids start with their creation time in milliseconds)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.client.cli.ids import LAST, MARGIN, MIN_PREFIX, is_prefix, span

MAX_MS = int((LAST - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)


def uuid7(ms: int, rest: int) -> str:
    value = ms << 80 | 0x7 << 76 | (rest >> 62 & 0xFFF) << 64 | 0b10 << 62 | rest & (2**62 - 1)
    return str(uuid.UUID(int=value))


# ids up to a minute before the end of what a Timestamp holds (at the end, `before` is clamped)
@given(st.integers(0, MAX_MS - 60_000), st.integers(0, 2**74 - 1), st.integers(MIN_PREFIX, 36))
def test_every_prefix_of_an_id_spans_its_creation_time(ms: int, rest: int, n: int) -> None:
    job_id = uuid7(ms, rest)
    prefix = job_id[:n]
    assert is_prefix(prefix) and is_prefix(prefix.replace("-", ""))
    after, before = span(prefix.replace("-", ""))
    created = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert after <= created - MARGIN and created < before
    assert before <= LAST


@given(st.text(max_size=40))
def test_prefixes_are_hex_with_dashes_where_a_uuid_has_them(text: str) -> None:
    shape = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    expected = bool(text) and (
        (len(text) <= 32 and all(c in "0123456789abcdef" for c in text))
        or (
            len(text) <= 36
            and all((c == "-") == (s == "-") for c, s in zip(text, shape, strict=False))
            and all(c in "0123456789abcdef-" for c in text)
        )
    )
    assert is_prefix(text) == expected


def test_examples() -> None:
    assert is_prefix("01a21285-0000-7") and is_prefix("01a212850000")
    assert not is_prefix("01a21285-00-00") and not is_prefix("job-42") and not is_prefix("")
    assert span("ffff")[1] == LAST  # far future ids stay within a Timestamp
