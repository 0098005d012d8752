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


# the variant nibble (0b10xx) of an id whose random bits start with hex digit d: _VARIANT[d]
_VARIANT = {f"{d:x}": f"{d & 0x3 | 0x8:x}" for d in range(16)}


def new_ids(n: int) -> list[str]:
    """`n` fresh ids in increasing order (one lock and one urandom call for all of them)."""
    if n <= 0:
        return []
    rand = os.urandom(8 * n).hex()
    ids: list[str] = []
    append = ids.append
    head_ms, head = -1, ""
    for i, (ms, counter) in enumerate(_stamps(n)):
        if ms != head_ms:  # the millisecond and version part, shared by most ids of a call
            h = f"{ms & 0xFFFF_FFFF_FFFF:012x}"
            head_ms, head = ms, f"{h[:8]}-{h[8:]}-7"
        r = rand[16 * i : 16 * i + 16]
        append(f"{head}{counter:03x}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:]}")
    return ids


def new_id() -> str:
    return new_ids(1)[0]
