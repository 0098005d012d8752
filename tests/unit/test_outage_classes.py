"""Which errors mean "the database cannot be reached" (and so UNAVAILABLE, NOT_SERVING, retry)."""

from __future__ import annotations

import socket

import pytest
from jobwheel.server.storage.outage import is_unreachable, reason
from sqlalchemy import exc as sa_exc


class PgError(Exception):
    def __init__(self, sqlstate: str, msg: str) -> None:
        super().__init__(msg)
        self.sqlstate = sqlstate


def wrapped(inner: BaseException, *, invalidated: bool = False) -> sa_exc.DBAPIError:
    err = sa_exc.DBAPIError("SELECT 1", {}, inner, connection_invalidated=invalidated)
    err.__cause__ = inner
    return err


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
        sa_exc.TimeoutError("QueuePool limit reached"),  # overload, not an outage
    ],
)
def test_not_outages(exc: BaseException) -> None:
    assert not is_unreachable(exc)
