"""The timer wheel against a dict oracle, plus edge cases."""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from jobwheel.server.scheduling.timer_wheel import TimerWheel


class Oracle:
    """Every timer in a dict; advance sorts what is due."""

    def __init__(self) -> None:
        self.timers: dict[int, tuple[int, int]] = {}
        self.seq = 0

    def insert(self, key: int, due: int) -> None:
        self.seq += 1
        self.timers[key] = (due, self.seq)

    def cancel(self, key: int) -> bool:
        return self.timers.pop(key, None) is not None

    def advance(self, now: int) -> list[tuple[int, int]]:
        due = sorted((d, s, k) for k, (d, s) in self.timers.items() if d <= now)
        for _, _, k in due:
            del self.timers[k]
        return [(k, d) for d, _, k in due]

    def next_due(self) -> int | None:
        return min((d for d, _ in self.timers.values()), default=None)


KEYS = st.integers(0, 40)


class WheelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.oracle = Oracle()
        self.wheel: TimerWheel[int] = TimerWheel(0)
        self.now = 0

    @initialize(
        start=st.integers(-(10**6), 10**6),
        tick=st.sampled_from([1, 3, 10, 1000]),
        bits=st.integers(1, 3),
        levels=st.integers(1, 4),
    )
    def setup(self, start: int, tick: int, bits: int, levels: int) -> None:
        self.wheel = TimerWheel(start, tick=tick, wheel_bits=bits, levels=levels)
        self.now = start
        self.span = tick * (1 << (bits * levels))

    @rule(key=KEYS, offset=st.integers(-50, 200) | st.integers(-(10**4), 10**7))
    def insert(self, key: int, offset: int) -> None:
        # Offsets scaled to the wheel's range hit every level, the overflow and the past.
        due = self.now + offset
        self.wheel.insert(key, due)
        self.oracle.insert(key, due)

    @rule(key=KEYS, fraction=st.floats(0, 3))
    def insert_scaled(self, key: int, fraction: float) -> None:
        due = self.now + int(self.span * fraction)
        self.wheel.insert(key, due)
        self.oracle.insert(key, due)

    @rule(key=KEYS)
    def cancel(self, key: int) -> None:
        assert self.wheel.cancel(key) == self.oracle.cancel(key)

    @rule(step=st.integers(0, 20) | st.integers(0, 10**4) | st.integers(0, 10**9))
    def advance(self, step: int) -> None:
        self.now += step
        self.check_advance(self.now)

    @rule(fraction=st.floats(0, 2))
    def advance_scaled(self, fraction: float) -> None:
        self.now += int(self.span * fraction)
        self.check_advance(self.now)

    @rule()
    def advance_to_next_due(self) -> None:
        due = self.wheel.next_due()
        if due is not None and due > self.now:
            self.now = due
            self.check_advance(due)

    @rule(back=st.integers(1, 100))
    def advance_backwards(self, back: int) -> None:
        self.check_advance(self.now - back)

    def check_advance(self, now: int) -> None:
        fired = self.wheel.advance(now)
        assert fired == self.oracle.advance(now)
        assert all(due <= now for _, due in fired)

    @invariant()
    def agree(self) -> None:
        assert len(self.wheel) == len(self.oracle.timers)
        assert self.wheel.next_due() == self.oracle.next_due()
        for key in (0, 7, 40):
            expected = self.oracle.timers.get(key)
            assert self.wheel.due_of(key) == (None if expected is None else expected[0])
            assert (key in self.wheel) == (expected is not None)


WheelMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestWheelAgainstOracle = WheelMachine.TestCase


def test_never_early_within_a_tick() -> None:
    wheel: TimerWheel[str] = TimerWheel(0, tick=1000)
    wheel.insert("a", 1500)
    wheel.insert("b", 1200)
    assert wheel.advance(1100) == []
    assert wheel.advance(1200) == [("b", 1200)]
    assert wheel.advance(1499) == []
    assert wheel.advance(1500) == [("a", 1500)]


def test_past_and_present_fire_on_next_advance() -> None:
    wheel: TimerWheel[str] = TimerWheel(10_000)
    wheel.insert("late", 5)
    wheel.insert("now", 10_000)
    assert wheel.next_due() == 5
    assert wheel.advance(10_000) == [("late", 5), ("now", 10_000)]
    assert len(wheel) == 0 and wheel.next_due() is None


def test_ties_fire_in_insertion_order_and_reinsert_moves() -> None:
    wheel: TimerWheel[str] = TimerWheel(0)
    for key in "abcd":
        wheel.insert(key, 5_000)
    wheel.insert("b", 5_000)  # moved to the back of the tie
    wheel.insert("c", 9_000)
    assert wheel.advance(10_000) == [("a", 5_000), ("d", 5_000), ("b", 5_000), ("c", 9_000)]


def test_overflow_and_cascade_across_levels() -> None:
    wheel: TimerWheel[int] = TimerWheel(0, tick=1, wheel_bits=2, levels=3)  # range 64 ticks
    dues = [1, 3, 4, 15, 16, 63, 64, 65, 200, 4095, 4096, 10**9]
    for i, due in enumerate(dues):
        wheel.insert(i, due)
    assert wheel.next_due() == 1
    fired: list[int] = []
    now = 0
    while len(wheel):
        nxt = wheel.next_due()
        assert nxt is not None
        assert wheel.advance(nxt - 1) == []
        now = nxt
        batch = wheel.advance(now)
        assert [d for _, d in batch] == [now]
        fired.extend(d for _, d in batch)
    assert fired == dues


def test_exact_boundaries_one_big_jump() -> None:
    wheel: TimerWheel[int] = TimerWheel(0, tick=1000, wheel_bits=6, levels=2)
    span = 1000 * 64 * 64
    dues = [999, 1000, 64_000 - 1, 64_000, span - 1, span, span + 1, 5 * span]
    for i, due in enumerate(dues):
        wheel.insert(i, due)
    assert [d for _, d in wheel.advance(span)] == dues[:6]
    assert wheel.next_due() == span + 1
    assert [d for _, d in wheel.advance(10 * span)] == dues[6:]


def test_cancel_and_next_due_after_cancelling_the_minimum() -> None:
    wheel: TimerWheel[str] = TimerWheel(0)
    wheel.insert("a", 70_000)
    wheel.insert("b", 70_500)
    assert wheel.cancel("a") and not wheel.cancel("a")
    assert wheel.next_due() == 70_500
    assert wheel.advance(10**12) == [("b", 70_500)]


def test_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError):
        TimerWheel(0, tick=0)


def test_a_million_timers() -> None:
    rng = random.Random(7)
    wheel: TimerWheel[int] = TimerWheel(0)
    n = 1_000_000
    for i in range(n):
        wheel.insert(i, rng.randrange(1, 3_600_000_000))  # within the next hour
    assert len(wheel) == n
    total = 0
    last = 0
    now = 0
    while now < 3_600_000_000:
        now += 60_000_000
        batch = wheel.advance(now)
        if batch:
            assert batch[0][1] >= last
            last = batch[-1][1]
        total += len(batch)
    assert total == n and len(wheel) == 0
