"""Size-aware pages: read only the rows whose stored documents fit a byte budget.

A page of 1,000 jobs whose payloads are 1 MB each is 1 GB of rows, and more once decoded.
So a page is read in two steps: first the order keys with the byte length of each row's
stored documents (the database computes the lengths; PostgreSQL reads them from the TOAST
header without decompressing), then, by key, only the rows that fit. Small rows come whole
with their lengths, so a page of them takes one statement; only bigger ones are read again.
Rows in memory stay near the budget whatever the page size; the caller still measures the
encoded reply exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from jobwheel.server.storage.dialect import Dialect
from sqlalchemy import Column, ColumnElement, Integer, Table, bindparam, case, func, null, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

K = TypeVar("K")
# Bytes a row takes beyond its measured documents (ids, names, times), as a floor.
ROW_OVERHEAD = 256
# Keys looked at by the first size query; each further one looks at four times as many, so
# a page of small rows costs few queries and a page of big rows reads few lengths (SQLite
# reads a text to measure it).
FIRST_LOOK = 16
# A size query returns a row whole when its documents add up to at most a document's share
# (each document its own) of this many bytes, or of the budget over the rows it looks at if
# less: what one holds stays within the budget.
INLINE_BYTES = 64 * 1024


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
    dialect: Dialect,
    key: Column[Any],
    documents: Sequence[Column[Any]],
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[ColumnElement[Any]],
    after: Callable[[Sequence[Any]], ColumnElement[bool]],
    limit: int,
    max_bytes: int,
    max_in_list: int,
) -> tuple[list[RowMapping], bool]:
    """Up to `limit` rows of `table` matching `where`, in `order_by` order (ascending or
    descending columns), while the stored sizes of their `documents` (the columns that can be
    large) fit `max_bytes` (at least one row); True when more rows match after them.
    `after(values of the order_by columns of a row)` is the condition for the rows that
    follow that row. A row's mapping may hold keys beyond the table's columns."""
    sizes = stored_bytes(dialect, *documents)
    orders = [_column(c).label(f"_page_order{i}") for i, c in enumerate(order_by)]
    columns = _whole_if(dialect, table, *documents)
    picker = Picker(limit, max_bytes)
    whole: dict[Any, RowMapping] = {}
    cursor: list[ColumnElement[bool]] = []
    look = FIRST_LOOK
    while True:
        want = min(look, limit + 1 - len(picker.chosen))
        # each document at most `inline`: a row whose documents add up to that comes whole
        inline = min(INLINE_BYTES, max_bytes // want) // len(documents)
        stmt = select(key.label("_page_key"), sizes.label("_page_size"), *orders, *columns)
        stmt = stmt.where(*where, *cursor).order_by(*order_by).limit(want)
        found = (await conn.execute(stmt, {"_page_inline": inline})).all()
        full = False
        for row in found:
            size = int(row[1])
            if not picker.offer(row[0], size):
                full = True
                break
            if size <= inline:
                whole[row[0]] = row._mapping
        if full or len(found) < want:
            break
        cursor = [after(tuple(found[-1][2 : 2 + len(orders)]))]
        look *= 4
    # the rows too big to come whole, by key (in one transaction they are all there; in
    # another that deleted one meanwhile, it is left out)
    fetched: dict[Any, RowMapping] = {}
    for chunk in chunks([k for k in picker.chosen if k not in whole], max_in_list):
        for mapping in (await conn.execute(select(table).where(key.in_(chunk)))).mappings():
            fetched[mapping[key.name]] = mapping
    rows = [whole.get(k, fetched.get(k)) for k in picker.chosen]
    return [row for row in rows if row is not None], picker.more


@functools.lru_cache(maxsize=16)
def _whole_if(
    dialect: Dialect, table: Table, *documents: Column[Any]
) -> tuple[ColumnElement[Any], ...]:
    """The columns of `table`, each of `documents` where its stored size is at most the
    parameter _page_inline (else NULL). Built once per table (a tuple: every call shares it):
    the expressions cost more to build than a page of small rows costs to read."""
    limit = bindparam("_page_inline", type_=Integer)
    large = {c.name for c in documents}
    return tuple(
        case((stored_bytes(dialect, c) <= limit, c), else_=null()).label(c.name)
        if c.name in large
        else c
        for c in table.columns
    )


def _column(order: ColumnElement[Any]) -> ColumnElement[Any]:
    """The column of an ORDER BY item (`seq.desc()` -> `seq`)."""
    element = getattr(order, "element", None)
    return order if element is None else element
