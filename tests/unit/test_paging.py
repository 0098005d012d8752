"""Choosing the rows of a size-bounded page (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.storage.paging import ROW_OVERHEAD, fit


@given(
    st.lists(st.integers(0, 5_000), max_size=40),
    st.integers(1, 30),
    st.integers(0, 50_000),
)
def test_fit_takes_the_longest_prefix_within_the_budget(
    sizes: list[int], limit: int, max_bytes: int
) -> None:
    keyed = list(enumerate(sizes))
    chosen, more = fit(keyed, limit, max_bytes)
    # oracle: grow the prefix while it stays within the budget (the first row always goes)
    n = 0
    while n < min(limit, len(sizes)):
        total = sum(s + ROW_OVERHEAD for s in sizes[: n + 1])
        if n > 0 and total > max_bytes:
            break
        n += 1
    assert chosen == list(range(n))
    assert more == (n < len(sizes))
