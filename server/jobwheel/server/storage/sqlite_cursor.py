"""SQLAlchemy's aiosqlite cursor, one hop to the driver's thread per statement.

SQLAlchemy's own takes four (make a cursor, execute, fetch the rows, close), each a hand-off
to aiosqlite's thread and back through the event loop: about 0.35 ms apiece on an idle 2-core
machine, so a read of one statement cost 1.4 ms before its transaction's BEGIN and COMMIT.
This cursor runs the four steps in one call in that thread and keeps what they returned (the
rows, description, rowcount and lastrowid). Server-side cursors (Connection.stream) keep
SQLAlchemy's. It builds on the adapter of SQLAlchemy 2.1 (`_execute_async`); with an adapter
that lacks it the connection keeps SQLAlchemy's cursor.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
from sqlalchemy.util import EMPTY_DICT

# what one hop brings back: description, rowcount, lastrowid, rows (None: no result set)
_Outcome = tuple[Any, int, int | None, list[Any] | None]


def _run(db: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """The statement on a cursor of its own, which it closes. In the driver's thread."""
    cursor = db.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneHopCursor(sa_aiosqlite.AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_outcome",)

    def __init__(self, adapt_connection: Any) -> None:  # no cursor made: no hop
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._outcome: _Outcome = (None, -1, None, None)

    @property
    def description(self) -> Any:
        return self._outcome[0]

    @property
    def rowcount(self) -> int:
        return self._outcome[1]

    @property
    def lastrowid(self) -> Any:
        return self._outcome[2]

    @property
    def arraysize(self) -> int:
        return 1  # sqlite3's default

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        pass  # closed in the thread already

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._hop(operation, parameters, False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        await self._hop(operation, seq_of_parameters, True)

    async def _hop(self, operation: Any, parameters: Any, many: bool) -> None:
        driver = self._connection
        async with self._adapt_connection._execute_mutex:
            self._outcome = await driver._execute(_run, driver._conn, operation, parameters, many)
        rows = self._outcome[3]
        self._rows = collections.deque(() if rows is None else rows)


class OneHopConnection(sa_aiosqlite.AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


def one_hop(dbapi_connection: Any) -> None:
    """Gives a connection of SQLAlchemy's aiosqlite dialect the one-hop cursor (from a
    "connect" event), where its adapter is the one this module builds on."""
    if isinstance(dbapi_connection, sa_aiosqlite.AsyncAdapt_aiosqlite_connection) and hasattr(
        sa_aiosqlite.AsyncAdapt_aiosqlite_cursor, "_execute_async"
    ):
        dbapi_connection.__class__ = OneHopConnection
