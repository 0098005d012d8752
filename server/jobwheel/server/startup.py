"""Start-up failures as one line an operator can act on (never a traceback)."""

from __future__ import annotations

import socket

from jobwheel.server.handlers import HandlersError
from jobwheel.server.security.settings import SecurityConfigError
from jobwheel.server.storage import ReadOnlyDatabase, SchemaVersionError, StorageUrlError
from jobwheel.server.storage.exclusive import DatabaseInUse
from jobwheel.server.storage.outage import is_unreachable, reason
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

# errors whose message already says what is wrong and what to do


class StartupError(Exception):
    """The server cannot start; the message says why in one line."""


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def safe_url(url: str) -> str:
    """A database URL with its password hidden, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the database"


def describe(exc: BaseException, db_url: str) -> str:
    """One line for a start-up failure: what could not be done, and the cause."""
    if isinstance(
        exc,
        StartupError
        | HandlersError
        | DatabaseInUse
        | StorageUrlError
        | SchemaVersionError
        | ReadOnlyDatabase
        | SecurityConfigError,
    ):
        return str(exc)
    db = safe_url(db_url)
    if is_unreachable(exc):
        return f"cannot reach {db}: {reason(exc)}"
    if isinstance(exc, sa_exc.DBAPIError):
        # the driver's own words: "database "x" does not exist", "file is not a database"
        words = _first_line(str(exc.orig))
        if "readonly" in words:  # e.g. SQLite in a directory the server cannot write to
            words += " (the server writes to the database file and creates files next to it)"
        return f"cannot use {db}: {words}"
    text = _first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_listen_address(listen: str) -> None:
    """Fails early, in words, when HOST:PORT cannot be listened on: the host does not
    resolve to a local address, or the port is taken. (gRPC would only log a C-level line.)"""
    host, _, port_text = listen.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise StartupError(f"cannot listen on {listen}: host {host!r} does not resolve") from exc
    if port == 0:
        return
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(address)
            except OSError as exc:
                raise StartupError(f"cannot listen on {listen}: {exc.strerror}") from exc
