"""Retry delay computation (pure: the random draw is passed in)."""

from __future__ import annotations

from jobwheel.server.model import Micros, RetryPolicy


def retry_delay(policy: RetryPolicy, attempt: int, rand: float) -> Micros:
    """The wait (µs) after failed attempt number `attempt` (1-based).

    min(initial * multiplier**(attempt - 1), max_backoff), scaled by
    1 + jitter * (2 * rand - 1) for `rand` in [0, 1), then clamped to [0, max_backoff].
    With rand = 0.5 the jitter factor is exactly 1.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    cap = max(policy.max_backoff, 0)
    try:
        base = min(policy.initial_backoff * policy.multiplier ** (attempt - 1), cap)
    except OverflowError:
        # multiplier ** n outgrew a float: the cap was passed long ago.
        base = cap
    delay = base * (1.0 + policy.jitter * (2.0 * rand - 1.0))
    return round(min(max(delay, 0.0), cap))
