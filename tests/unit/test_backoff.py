"""Retry delays: the default ladder, and properties for any policy."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server.model import SECOND, RetryPolicy
from jobwheel.server.rules.backoff import retry_delay

RAND = st.floats(0.0, 1.0, exclude_max=True)
POLICIES = st.builds(
    RetryPolicy,
    initial_backoff=st.integers(0, 3600 * SECOND),
    max_backoff=st.integers(0, 86_400 * SECOND),
    multiplier=st.floats(1.0, 100.0),
    jitter=st.floats(0.0, 1.0),
)
ATTEMPTS = st.integers(1, 10_000)


def test_default_ladder_without_jitter_draw() -> None:
    policy = RetryPolicy()
    waits = [retry_delay(policy, n, 0.5) for n in range(1, 6)]
    assert waits == [30 * SECOND, 120 * SECOND, 300 * SECOND, 300 * SECOND, 300 * SECOND]


def test_default_jitter_band_edges() -> None:
    policy = RetryPolicy()
    assert retry_delay(policy, 1, 0.0) == 27 * SECOND
    assert 32 * SECOND < retry_delay(policy, 1, 0.999999) <= 33 * SECOND
    assert retry_delay(policy, 3, 0.999999) == 300 * SECOND  # clamped to the cap


def test_huge_attempt_does_not_overflow() -> None:
    assert retry_delay(RetryPolicy(), 10**9, 0.5) == 300 * SECOND
    assert retry_delay(RetryPolicy(multiplier=1e300), 3, 0.5) == 300 * SECOND


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError):
        retry_delay(RetryPolicy(), 0, 0.5)


@settings(max_examples=300, deadline=None)
@given(POLICIES, ATTEMPTS, RAND)
def test_bounded(policy: RetryPolicy, attempt: int, rand: float) -> None:
    assert 0 <= retry_delay(policy, attempt, rand) <= policy.max_backoff


@settings(max_examples=300, deadline=None)
@given(POLICIES, ATTEMPTS, RAND)
def test_within_jitter_band(policy: RetryPolicy, attempt: int, rand: float) -> None:
    plain = retry_delay(replace(policy, jitter=0.0), attempt, rand)
    jittered = retry_delay(policy, attempt, rand)
    band = plain * policy.jitter
    assert plain - band - 1 <= jittered <= min(plain + band + 1, policy.max_backoff)


@settings(max_examples=200, deadline=None)
@given(POLICIES, st.integers(1, 200), RAND)
def test_monotone_without_jitter(policy: RetryPolicy, attempt: int, rand: float) -> None:
    policy = replace(policy, jitter=0.0)
    assert retry_delay(policy, attempt, rand) <= retry_delay(policy, attempt + 1, rand)
