"""Telling a database that cannot be reached from every other database error.

A refused, reset or lost connection (or PostgreSQL shutting down), or on SQLite a full disk, an
I/O error or a lock held past the busy timeout, is an outage: the same call
will work once the database is back. The store raises `DatabaseUnavailable` for those, so the
API answers UNAVAILABLE, the engine retries what it must store, and health reports
NOT_SERVING, while every other error keeps its own meaning.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

# PostgreSQL SQLSTATEs of a lost or refused connection: class 08 (connection exception),
# admin/crash shutdown, cannot connect now (starting up or shutting down), too many
# connections
_SHUTDOWN_STATES = ("57P01", "57P02", "57P03", "53300")
# answered to a new connection: the database is not accepting connections (ALLOW_CONNECTIONS
# false); raised by a statement, the same SQLSTATE means something else
_REFUSED_AT_CONNECT = "55000"
# SQLite's errors of the file, the disk and the locks, not of the statement (extended codes
# start with these): the disk is full or failing, the file cannot be opened or written,
# another process held the lock past the busy timeout. The same write works once that passes.
_SQLITE_OUTAGES = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_READONLY",
    "SQLITE_CANTOPEN",
)


class DatabaseUnavailable(Exception):
    """The database cannot be reached now; retrying later will help."""


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen) or len(seen) > 10:
            continue
        seen.append(item)
        todo += [getattr(item, "orig", None), item.__cause__, item.__context__]
    return seen


def is_unreachable(exc: BaseException) -> bool:
    """True when `exc` says the database cannot be reached (not that a statement failed)."""
    causes = _causes(exc)
    for item in causes:
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return True
        if isinstance(item, OSError):  # refused, reset, unreachable, timed out, DNS
            return True
        name = getattr(item, "sqlite_errorname", None)
        if isinstance(name, str) and name.startswith(_SQLITE_OUTAGES):
            return True
        state = getattr(item, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in _SHUTDOWN_STATES):
            return True
        if state == _REFUSED_AT_CONNECT and _connecting(causes):
            return True
        if type(item).__name__ == "InterfaceError" and "connection is closed" in str(item):
            return True
        # asyncpg's protocol mid-way through a backend's end (a FATAL still being read)
        if type(item).__name__ == "InternalClientError" and "cannot switch to state" in str(item):
            return True
    return False


def _connecting(causes: list[BaseException]) -> bool:
    """Whether the error was met opening a connection: SQLAlchemy's error names no statement."""
    return any(isinstance(i, sa_exc.DBAPIError) and i.statement is None for i in causes)


# PostgreSQL's transaction rollback class: serialization failure, deadlock detected
_CONFLICT_STATES = ("40001", "40P01")


def is_conflict(exc: BaseException) -> bool:
    """True when the database rolled the transaction back for a concurrent one (a deadlock
    or a serialization failure): the same transaction, run again, may well commit."""
    return isinstance(exc, sa_exc.DBAPIError) and any(
        getattr(item, "sqlstate", None) in _CONFLICT_STATES for item in _causes(exc)
    )


def reason(exc: BaseException) -> str:
    """A short description of the outage for logs: the innermost cause's type and message."""
    inner = _causes(exc)[-1]
    text = str(inner).splitlines()[0] if str(inner) else ""
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__
