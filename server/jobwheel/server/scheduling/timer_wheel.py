"""A hierarchical timing wheel (Varghese & Lauck; Kafka's purgatory; the Linux timer wheel).

Pure data structure: no I/O, no clock reads. Times are int microseconds; the caller passes `now`.

Layout. Time is cut into ticks of `tick` µs, counted from `start`. A timer's tick number `e` is
written in base 2**wheel_bits; level k holds timers whose tick agrees with the wheel's current
tick `cur` on every digit above k, in the slot given by digit k of `e`. So level 0 holds the
current rotation tick by tick, level 1 the rest of the current level-2 block 64 ticks per slot,
and so on. Timers beyond the top level wait in a heap (`overflow`) and enter the wheel when `cur`
reaches their top-level block. Timers already due (due <= now at insert) wait in a `ready` heap.

Each level keeps an occupancy bitmask, so `advance` jumps straight to the next occupied slot:
its cost depends on the timers fired and cascaded, never on the number of empty ticks crossed.

Slots place timers by tick, but firing compares exact due times: `advance(now)` fires a timer iff
its due <= now, never early, even when due and now fall within the same tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Location codes for entries not in a wheel slot.
_READY = -1
_OVERFLOW = -2

# An entry is a mutable list [due, seq, loc]: shared by the key index and the slot dict, so a
# cascade updates its location in place. loc = level * slots + slot, or _READY / _OVERFLOW.
_Entry = list[int]


class TimerWheel(Generic[K]):
    """Timers keyed by any hashable key; one timer per key.

    `start` is the wheel's initial time (µs) and also its initial `now`; `tick` is the slot
    width of level 0 (µs); `wheel_bits` gives 2**wheel_bits slots per level; `levels` levels
    cover tick * 2**(wheel_bits*levels) µs ahead (about 2.2 years with the defaults) before a
    timer goes to the overflow heap.
    """

    def __init__(self, start: int, tick: int = 1_000, wheel_bits: int = 6, levels: int = 6):
        if tick <= 0 or wheel_bits <= 0 or levels <= 0:
            raise ValueError("tick, wheel_bits and levels must be positive")
        self._start = start
        self._tick = tick
        self._bits = wheel_bits
        self._nslots = 1 << wheel_bits
        self._mask = self._nslots - 1
        self._levels = levels
        self._now = start
        self._cur = 0  # tick number of _now
        self._seq = 0  # insertion counter: breaks ties between equal due times
        self._index: dict[K, _Entry] = {}
        self._slots: list[list[dict[K, _Entry]]] = [
            [{} for _ in range(self._nslots)] for _ in range(levels)
        ]
        self._occupied = [0] * levels
        # Per-slot lower bound on due, exact unless marked stale (None) by a cancel.
        self._slot_min: list[list[int | None]] = [[None] * self._nslots for _ in range(levels)]
        # Heaps of (due, seq, key); stale items (key cancelled or moved) are skipped lazily.
        self._ready: list[tuple[int, int, K]] = []
        self._overflow: list[tuple[int, int, K]] = []

    # -- queries -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def now(self) -> int:
        """The latest time passed to `advance` (or `start`)."""
        return self._now

    def due_of(self, key: K) -> int | None:
        entry = self._index.get(key)
        return None if entry is None else entry[0]

    def next_due(self) -> int | None:
        """The exact earliest due time of all timers, or None when empty.

        Costs a bitmask scan plus, at worst, one pass over a single slot whose cached minimum
        was invalidated by a cancel; never a scan of all timers.
        """
        top = self._heap_top(self._ready)
        if top is not None:
            return top[0]
        cur = self._cur
        for level in range(self._levels):
            digit = (cur >> (self._bits * level)) & self._mask
            # Level 0 may hold timers in the current tick; higher levels only later slots.
            occ = self._occupied[level] >> (digit if level == 0 else digit + 1)
            if occ:
                slot = (digit if level == 0 else digit + 1) + (occ & -occ).bit_length() - 1
                lowest = self._slot_min[level][slot]
                if lowest is None:
                    lowest = min(e[0] for e in self._slots[level][slot].values())
                    self._slot_min[level][slot] = lowest
                return lowest
        top = self._heap_top(self._overflow)
        return None if top is None else top[0]

    # -- mutation ----------------------------------------------------------------------------

    def insert(self, key: K, due: int) -> None:
        """Add a timer, or move it if `key` is already present. O(1) (overflow: O(log n))."""
        if key in self._index:
            self.cancel(key)
        self._seq += 1
        entry = [due, self._seq, 0]
        self._index[key] = entry
        if due <= self._now:
            entry[2] = _READY
            heapq.heappush(self._ready, (due, entry[1], key))
        else:
            self._place(key, entry)

    def cancel(self, key: K) -> bool:
        """Remove a timer; False if there was none. O(1)."""
        entry = self._index.pop(key, None)
        if entry is None:
            return False
        loc = entry[2]
        if loc >= 0:
            level, slot = divmod(loc, self._nslots)
            bucket = self._slots[level][slot]
            del bucket[key]
            if not bucket:
                self._occupied[level] &= ~(1 << slot)
                self._slot_min[level][slot] = None
            elif self._slot_min[level][slot] == entry[0]:
                self._slot_min[level][slot] = None
        # Heap items are left behind and skipped when they surface.
        return True

    def advance(self, now: int) -> list[tuple[K, int]]:
        """Move time to `now`; remove and return every timer with due <= now.

        The result is ordered by due time, ties in insertion order. Moving backwards fires only
        ready timers that are due by `now` and leaves the wheel where it is.
        """
        fired: list[tuple[K, int]] = []
        ready = self._ready
        while ready and ready[0][0] <= now:
            due, seq, key = heapq.heappop(ready)
            entry = self._index.get(key)
            if entry is not None and entry[1] == seq:
                del self._index[key]
                fired.append((key, due))
        if now <= self._now:
            return fired
        self._now = now
        target = (now - self._start) // self._tick
        bits, mask = self._bits, self._mask
        cur = self._cur
        while True:
            digit = cur & mask
            occ = self._occupied[0] >> digit
            if occ:
                slot = digit + (occ & -occ).bit_length() - 1
                tick_no = (cur & ~mask) | slot
                if tick_no > target:
                    break
                cur = tick_no
                self._cur = cur
                self._fire_slot(slot, now, tick_no < target, fired)
                if tick_no == target:
                    break  # what is left in this slot is due later within the tick
                continue
            # Level 0 is empty from here: jump to the next occupied slot of a higher level.
            level, next_cur = self._next_boundary(cur)
            if next_cur is None or next_cur > target:
                break
            cur = next_cur
            self._cur = cur
            if level < self._levels:
                self._cascade(level, (cur >> (bits * level)) & mask)
            self._pull_overflow()
        self._cur = target
        return fired

    # -- internals ---------------------------------------------------------------------------

    def _place(self, key: K, entry: _Entry) -> None:
        tick_no = (entry[0] - self._start) // self._tick
        diff = tick_no ^ self._cur
        level = (diff.bit_length() - 1) // self._bits if diff > 0 else 0
        if level >= self._levels:
            entry[2] = _OVERFLOW
            heapq.heappush(self._overflow, (entry[0], entry[1], key))
            return
        slot = (tick_no >> (self._bits * level)) & self._mask
        bucket = self._slots[level][slot]
        mins = self._slot_min[level]
        if not bucket:
            self._occupied[level] |= 1 << slot
            mins[slot] = entry[0]
        else:
            lowest = mins[slot]
            if lowest is not None and entry[0] < lowest:
                mins[slot] = entry[0]
        bucket[key] = entry
        entry[2] = level * self._nslots + slot

    def _fire_slot(self, slot: int, now: int, whole: bool, fired: list[tuple[K, int]]) -> None:
        bucket = self._slots[0][slot]
        if whole and len(bucket) == 1:
            # The common case of a sparse wheel.
            self._slots[0][slot] = {}
            self._occupied[0] &= ~(1 << slot)
            self._slot_min[0][slot] = None
            key, entry = bucket.popitem()
            del self._index[key]
            fired.append((key, entry[0]))
            return
        if not whole and any(e[0] > now for e in bucket.values()):
            # The current tick: fire what is due, keep the rest (never early).
            due_now = [(e[0], e[1], k) for k, e in bucket.items() if e[0] <= now]
            for _, _, key in due_now:
                del bucket[key]
            self._slot_min[0][slot] = None
        else:
            due_now = [(e[0], e[1], k) for k, e in bucket.items()]
            self._slots[0][slot] = {}
            self._occupied[0] &= ~(1 << slot)
            self._slot_min[0][slot] = None
        if len(due_now) > 1:
            due_now.sort()
        index = self._index
        for due, _, key in due_now:
            del index[key]
            fired.append((key, due))

    def _next_boundary(self, cur: int) -> tuple[int, int | None]:
        """The tick where the next occupied slot of level >= 1 starts (or the overflow's block)."""
        bits, mask = self._bits, self._mask
        for level in range(1, self._levels):
            digit = (cur >> (bits * level)) & mask
            occ = self._occupied[level] >> (digit + 1)
            if occ:
                slot = digit + (occ & -occ).bit_length()
                high = (cur >> (bits * (level + 1))) << (bits * (level + 1))
                return level, high | (slot << (bits * level))
        top = self._heap_top(self._overflow)
        if top is None:
            return self._levels, None
        top_tick = (top[0] - self._start) // self._tick
        span = bits * self._levels
        return self._levels, (top_tick >> span) << span

    def _cascade(self, level: int, slot: int) -> None:
        bucket = self._slots[level][slot]
        self._slots[level][slot] = {}
        self._occupied[level] &= ~(1 << slot)
        self._slot_min[level][slot] = None
        # _place, inlined: cascading is most of the work of a busy wheel. Every entry lands on
        # a lower level, which the jump to this slot left empty beyond `cur`.
        start, tick, bits, mask, cur = self._start, self._tick, self._bits, self._mask, self._cur
        nslots, slots, mins, occupied = self._nslots, self._slots, self._slot_min, self._occupied
        for key, entry in bucket.items():
            tick_no = (entry[0] - start) // tick
            diff = tick_no ^ cur
            low = (diff.bit_length() - 1) // bits if diff > 0 else 0
            low_slot = (tick_no >> (bits * low)) & mask
            target = slots[low][low_slot]
            if not target:
                occupied[low] |= 1 << low_slot
                mins[low][low_slot] = entry[0]
            else:
                lowest = mins[low][low_slot]
                if lowest is not None and entry[0] < lowest:
                    mins[low][low_slot] = entry[0]
            target[key] = entry
            entry[2] = low * nslots + low_slot

    def _pull_overflow(self) -> None:
        span = self._bits * self._levels
        block = self._cur >> span
        heap = self._overflow
        while heap:
            due, seq, key = heap[0]
            entry = self._index.get(key)
            if entry is None or entry[1] != seq:
                heapq.heappop(heap)
                continue
            if ((due - self._start) // self._tick) >> span > block:
                return
            heapq.heappop(heap)
            self._place(key, entry)

    def _heap_top(self, heap: list[tuple[int, int, K]]) -> tuple[int, int, K] | None:
        while heap:
            _, seq, key = heap[0]
            entry = self._index.get(key)
            if entry is not None and entry[1] == seq:
                return heap[0]
            heapq.heappop(heap)
        return None
