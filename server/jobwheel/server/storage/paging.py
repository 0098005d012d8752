"""Size-aware pages: read only the rows whose stored documents fit a byte budget.

A page of 1,000 jobs whose payloads are 1 MB each is 1 GB of rows, and more once decoded.
So a page is read in two steps: first the order keys with the byte length of each row's
stored documents (the database computes the lengths; PostgreSQL reads them from the TOAST
header without decompressing), then, by key, only the rows that fit. Rows in memory stay near
the budget whatever the page size; the caller still measures the encoded reply exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

K = TypeVar("K")
# Bytes a row takes beyond its measured documents (ids, names, times), as a floor.
ROW_OVERHEAD = 256


def fit(keyed: Sequence[tuple[K, int]], limit: int, max_bytes: int) -> tuple[list[K], bool]:
    """The leading keys whose sizes add up to at most `max_bytes` (at least one key, up to
    `limit`), and whether any key of `keyed` was left out."""
    chosen: list[K] = []
    total = 0
    for key, size in keyed[:limit]:
        size += ROW_OVERHEAD
        if chosen and total + size > max_bytes:
            break
        chosen.append(key)
        total += size
    return chosen, len(chosen) < len(keyed)


def stored_bytes(dialect: str, *columns: Any) -> ColumnElement[int]:
    """The summed byte (SQLite: character) length of text `columns`, NULL counting 0."""
    length = func.octet_length if dialect == "postgresql" else func.length
    total: ColumnElement[int] | None = None
    for column in columns:
        part = func.coalesce(length(column), 0)
        total = part if total is None else total + part
    assert total is not None
    return total


def _chunks(items: list[K], size: int) -> Iterable[list[K]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def bounded_rows(
    conn: AsyncConnection,
    table: Table,
    *,
    key: ColumnElement[Any],
    sizes: ColumnElement[int],
    where: Sequence[ColumnElement[bool]],
    order_by: Sequence[Any],
    limit: int,
    max_bytes: int,
    max_in_list: int,
) -> tuple[list[RowMapping], bool]:
    """Up to `limit` rows of `table` matching `where`, in `order_by` order, while their
    `sizes` fit `max_bytes` (at least one row); True when more rows match after them."""
    keys_stmt = select(key, sizes).where(*where).order_by(*order_by).limit(limit + 1)
    keyed = [(row[0], int(row[1])) for row in (await conn.execute(keys_stmt)).all()]
    chosen, more = fit(keyed, limit, max_bytes)
    rows: list[RowMapping] = []
    # consecutive runs of the ordered keys, each read in the same order: the pages concatenate
    for chunk in _chunks(chosen, max_in_list):
        stmt = select(table).where(key.in_(chunk)).order_by(*order_by)
        rows += (await conn.execute(stmt)).mappings().all()
    return rows, more
