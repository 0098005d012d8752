"""Identifiers: UUIDv7 (RFC 9562), so ids sort by creation time in every language.

Within one millisecond a 12-bit counter (RFC 9562 "method 1") keeps the ids of this process
strictly increasing.
"""

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def _stamps(n: int) -> list[tuple[int, int]]:
    """(millisecond, counter) for `n` ids, strictly increasing across calls."""
    global _last_ms, _counter
    out: list[tuple[int, int]] = []
    with _lock:
        ms = time.time_ns() // 1_000_000
        counter = _counter
        if ms <= _last_ms:
            ms = _last_ms
        else:
            counter = -1
        for _ in range(n):
            counter += 1
            if counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                ms += 1
                counter = 0
            out.append((ms, counter))
        _last_ms, _counter = ms, counter
    return out


def new_ids(n: int) -> list[str]:
    """`n` fresh ids in increasing order (one lock and one urandom call for all of them)."""
    if n <= 0:
        return []
    rand = os.urandom(8 * n)
    ids: list[str] = []
    for i, (ms, counter) in enumerate(_stamps(n)):
        low = int.from_bytes(rand[8 * i : 8 * i + 8], "big") & ((1 << 62) - 1)
        value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | low
        h = f"{value:032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def new_id() -> str:
    return new_ids(1)[0]
