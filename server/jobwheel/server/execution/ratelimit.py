"""Token bucket for a queue's max dispatches per second (pure: time is passed in)."""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)  # a burst of one second's worth
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def take(self, want: int, now: float) -> int:
        """Takes up to `want` whole tokens; returns how many."""
        self._refill(now)
        n = max(0, min(want, int(self.tokens)))
        self.tokens -= n
        return n

    def give_back(self, n: int) -> None:
        self.tokens = min(self.capacity, self.tokens + n)

    def wait(self, now: float) -> float:
        """Seconds until a token is available."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate
