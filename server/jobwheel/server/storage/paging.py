"""Size-aware pages: read only the rows whose stored documents fit a byte budget.

A page of 1,000 jobs whose payloads are 1 MB each is 1 GB of rows, and more once decoded.
So a page is read in two steps: first the order keys with the byte length of each row's
stored documents (the database computes the lengths; PostgreSQL reads them from the TOAST
header without decompressing), then, by key, only the rows that fit. Rows in memory stay near
the budget whatever the page size; the caller still measures the encoded reply exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from jobwheel.server.storage.dialect import Dialect
from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

K = TypeVar("K")
# Bytes a row takes beyond its measured documents (ids, names, times), as a floor.
ROW_OVERHEAD = 256
# Keys looked at by the first size query; each further one looks at four times as many, so
# a page of small rows costs few queries and a page of big rows reads few lengths (SQLite
# reads a text to measure it).
FIRST_LOOK = 16


class Picker:
    """Chooses the leading keys whose sizes add up to at most `max_bytes` (always the first
    key offered), up to `limit` keys; `more` tells that a key offered was left out."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.chosen: list[Any] = []
        self.total = 0
        self.more = False

    def offer(self, key: Any, size: int) -> bool:
        """Takes `key` if it fits; False (and `more` set) once the page is full."""
        size += ROW_OVERHEAD
        if len(self.chosen) >= self.limit or (self.chosen and self.total + size > self.max_bytes):
            self.more = True
            return False
        self.chosen.append(key)
        self.total += size
        return True


def fit(keyed: Sequence[tuple[K, int]], limit: int, max_bytes: int) -> tuple[list[K], bool]:
    """Picker over a whole list: the chosen keys, and whether any key was left out."""
    picker = Picker(limit, max_bytes)
    for key, size in keyed:
        if not picker.offer(key, size):
            break
    return picker.chosen, picker.more


@functools.lru_cache(maxsize=16)
def stored_bytes(dialect: Dialect, *columns: Any) -> ColumnElement[int]:
    """The summed byte (SQLite: character) length of text `columns`, NULL counting 0. Built
    once per set of columns: the expression costs more to build than a page of small rows
    costs to read."""
    total: ColumnElement[int] | None = None
    for column in columns:
        part = func.coalesce(dialect.text_bytes(column), 0)
        total = part if total is None else total + part
    assert total is not None
    return total


def chunks(items: list[K], size: int) -> Iterable[list[K]]:
    """`items` in consecutive slices of at most `size` (IN lists the database bounds)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def bounded_rows(
    conn: AsyncConnection,
    table: Table,
    *,
    key: ColumnElement[Any],
    sizes: ColumnElement[int],
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[ColumnElement[Any]],
    after: Callable[[Sequence[Any]], ColumnElement[bool]],
    limit: int,
    max_bytes: int,
    max_in_list: int,
) -> tuple[list[RowMapping], bool]:
    """Up to `limit` rows of `table` matching `where`, in `order_by` order (ascending or
    descending columns), while their `sizes` fit `max_bytes` (at least one row); True when
    more rows match after them. `after(values of the order_by columns of a row)` is the
    condition for the rows that follow that row."""
    picker = Picker(limit, max_bytes)
    cursor: list[ColumnElement[bool]] = []
    look = FIRST_LOOK
    while True:
        columns = [key, sizes, *(_column(c) for c in order_by)]
        stmt = select(*columns).where(*where, *cursor).order_by(*order_by)
        want = min(look, limit + 1 - len(picker.chosen))
        found = (await conn.execute(stmt.limit(want))).all()
        if not all(picker.offer(row[0], int(row[1])) for row in found) or len(found) < want:
            break
        cursor = [after(tuple(found[-1][2:]))]
        look *= 4
    rows: list[RowMapping] = []
    # consecutive runs of the ordered keys, each read in the same order: the pages concatenate
    for chunk in chunks(picker.chosen, max_in_list):
        stmt = select(table).where(key.in_(chunk)).order_by(*order_by)
        rows += (await conn.execute(stmt)).mappings().all()
    return rows, picker.more


def _column(order: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column of an ORDER BY item (`seq.desc()` -> `seq`)."""
    element = getattr(order, "element", None)
    return order if element is None else element
