"""The stored form of an attempt's error (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server import failures


def _raise(message: str, depth: int) -> BaseException:
    def down(level: int) -> None:
        if level <= 0:
            raise ValueError(message)
        down(level - 1)

    try:
        down(depth)
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


@given(st.text(max_size=5000), st.integers(min_value=0, max_value=80))
def test_error_text_splits_back_into_bounded_parts(message: str, depth: int) -> None:
    exc = _raise(message, depth)
    parts = failures.split(failures.error_text(exc))
    assert parts.type == "ValueError"
    assert len(parts.summary) <= failures.MAX_SUMMARY
    expected = f"ValueError: {message}" if message else "ValueError"
    if len(expected) <= failures.MAX_SUMMARY:
        assert parts.summary == expected
    else:
        assert parts.summary == expected[: failures.MAX_SUMMARY - 1] + "…"
    assert len(parts.traceback) <= failures.MAX_TRACEBACK
    assert parts.traceback.startswith(("Traceback (most recent call last):", "…"))
    # at most MAX_FRAMES frames, the innermost ones
    assert parts.traceback.count("in down") <= failures.MAX_FRAMES


@given(st.text(max_size=300))
def test_any_text_splits_without_loss(text: str) -> None:
    parts = failures.split(text)
    rebuilt = parts.summary + (f"\n\n{parts.traceback}" if parts.traceback else "")
    assert rebuilt == text
    assert parts.type == "" or text.startswith(parts.type)


def test_exception_without_traceback_is_just_the_summary() -> None:
    assert failures.error_text(KeyError("k")) == "KeyError: 'k'"
    assert failures.split("TimeoutError: exceeded 1s").type == "TimeoutError"
    assert failures.split("something broke: badly").type == ""


def test_a_reported_failure_is_stored_without_a_traceback() -> None:
    class Refused(failures.Reported):
        pass

    try:
        raise Refused("HttpError: 503 Service Unavailable")
    except Refused as exc:
        assert failures.error_text(exc) == "Refused: HttpError: 503 Service Unavailable"


@pytest.mark.parametrize("text", [" A", "A B: c", "\nX: y"])
def test_a_type_is_a_name_at_the_very_start(text: str) -> None:
    assert failures.split(text).type == ""
