"""Which errors mean "the database cannot be reached" (and so UNAVAILABLE, NOT_SERVING, retry)."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import grpc
import pytest
from asyncpg.exceptions import InterfaceError, InternalClientError
from jobwheel.server.api.errors import expected_status
from jobwheel.server.storage.outage import is_unreachable, reason
from sqlalchemy import exc as sa_exc


class PgError(Exception):
    def __init__(self, sqlstate: str, msg: str) -> None:
        super().__init__(msg)
        self.sqlstate = sqlstate


def wrapped(
    inner: BaseException, *, invalidated: bool = False, statement: str | None = "SELECT 1"
) -> sa_exc.DBAPIError:
    """`inner` as SQLAlchemy raises it; `statement` None: met opening a connection."""
    err = sa_exc.DBAPIError(statement, {}, inner, connection_invalidated=invalidated)
    err.__cause__ = inner
    return err


NOT_ACCEPTING = 'database "x" is not currently accepting connections'


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "reset by peer"),
        TimeoutError("connect timed out"),
        socket.gaierror(-2, "Name or service not known"),
        wrapped(Exception("connection is closed"), invalidated=True),
        wrapped(PgError("08006", "connection failure")),
        wrapped(PgError("57P01", "terminating connection due to administrator command")),
        wrapped(PgError("57P03", "the database system is starting up")),
        wrapped(PgError("53300", "sorry, too many clients already"), statement=None),
        wrapped(PgError("55000", NOT_ACCEPTING), statement=None),  # ALLOW_CONNECTIONS false
        # asyncpg's own connection (statements sent below SQLAlchemy): closed, or its
        # protocol still reading a backend's end when the next statement came
        InterfaceError("cannot call Connection.fetchrow(): connection is closed"),
        InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
    ],
)
def test_outages(exc: BaseException) -> None:
    assert is_unreachable(exc)
    assert reason(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        wrapped(PgError("3D000", 'database "x" does not exist')),
        wrapped(PgError("28000", 'role "x" does not exist')),
        wrapped(PgError("23505", "duplicate key")),
        wrapped(PgError("22P05", "unsupported Unicode escape sequence")),
        wrapped(PgError("40P01", "deadlock detected")),  # a conflict: ABORTED, not an outage
        # raised by a statement, 55000 is a statement's fault (not in prerequisite state)
        wrapped(PgError("55000", 'currval of sequence "s" is not yet defined in this session')),
        sa_exc.TimeoutError("QueuePool limit reached"),  # overload, not an outage
        InternalClientError("unexpected codec error"),
    ],
)
def test_not_outages(exc: BaseException) -> None:
    assert not is_unreachable(exc)


def sqlite_error(sql: str, params: list[object] | None = None) -> sa_exc.OperationalError:
    """The OperationalError SQLAlchemy raises for what a real SQLite says to `sql`."""
    conn = sqlite3.connect(":memory:", timeout=0)
    try:
        conn.execute(sql, params or [])
    except sqlite3.OperationalError as inner:
        return sa_exc.OperationalError(sql, params, inner)
    finally:
        conn.close()
    raise AssertionError(f"{sql!r} ran")


def test_a_statement_sqlite_refuses_is_internal_not_unavailable() -> None:
    too_many = sqlite_error("SELECT " + ",".join("?" * 300_000), [1] * 300_000)
    assert "too many SQL variables" in str(too_many)
    for refused in (too_many, sqlite_error("SELEC 1"), sqlite_error("SELECT * FROM nowhere")):
        assert expected_status(refused) is None  # INTERNAL, logged with an error id
        assert not is_unreachable(refused)


def test_a_locked_sqlite_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = sqlite_error_at(path, "SELECT * FROM t")
    finally:
        holder.close()
    status = expected_status(locked)
    assert status is not None and status.code == grpc.StatusCode.UNAVAILABLE
    # an outage: the engine keeps what it must store and tries again, health follows
    assert is_unreachable(locked)


def sqlite_error_at(path: Path, sql: str) -> sa_exc.OperationalError:
    conn = sqlite3.connect(path, timeout=0)
    try:
        conn.execute(sql)
    except sqlite3.OperationalError as inner:
        assert inner.sqlite_errorname == "SQLITE_BUSY"
        return sa_exc.OperationalError(sql, {}, inner)
    finally:
        conn.close()
    raise AssertionError(f"{sql!r} ran")
