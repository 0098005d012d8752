"""TCP keepalives and a user timeout on the server's PostgreSQL connections.

A database host that goes away without a word (powered off, its address moved by a failover, a
network dropping packets) sends no reset: without keepalives a connection waiting for an answer
waits forever, and one with data unacknowledged waits out the kernel's retransmissions (about
15 minutes on Linux). With them the kernel ends such a connection within about
`idle + interval x count` seconds, `tcp_user_timeout` at most once data is outstanding; asyncpg
reports it lost, which the store takes for an outage (outage.py): UNAVAILABLE, health
NOT_SERVING, new connections once the database answers again.

A PostgreSQL URL takes libpq's names for these settings as query parameters. asyncpg knows
none of them, so they are taken out of the URL and set on each new connection's socket.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

# name: (default, low, high), libpq's names and units (seconds; tcp_user_timeout in ms, 0: the
# system's); the highs are Linux's own limits. The defaults end a silent connection within
# about 25 s: a failover is met while a client's call may still be waiting for it.
PARAMS = {
    "keepalives": (1, 0, 1),
    "keepalives_idle": (10, 1, 32767),
    "keepalives_interval": (5, 1, 32767),
    "keepalives_count": (3, 1, 127),
    "tcp_user_timeout": (25_000, 0, 2_147_483_647),
}


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The TCP settings of every connection to PostgreSQL (seconds; user_timeout_ms in ms)."""

    enabled: bool = True
    idle_s: int = PARAMS["keepalives_idle"][0]
    interval_s: int = PARAMS["keepalives_interval"][0]
    count: int = PARAMS["keepalives_count"][0]
    user_timeout_ms: int = PARAMS["tcp_user_timeout"][0]

    def options(self) -> list[tuple[int, int, int]]:
        """(level, option, value) to set on a TCP socket; those this system lacks are left
        out (macOS has no TCP_USER_TIMEOUT and calls TCP_KEEPIDLE TCP_KEEPALIVE)."""
        if not self.enabled:
            return [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)]
        idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
        wanted = [
            (idle, self.idle_s),
            (getattr(socket, "TCP_KEEPINTVL", None), self.interval_s),
            (getattr(socket, "TCP_KEEPCNT", None), self.count),
            (getattr(socket, "TCP_USER_TIMEOUT", None), self.user_timeout_ms),
        ]
        tcp = [(socket.IPPROTO_TCP, opt, value) for opt, value in wanted if opt is not None]
        return [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), *tcp]


def take_keepalive(url: URL) -> tuple[URL, Keepalive]:
    """Reads libpq's keepalive parameters from a PostgreSQL URL: (the URL without them, the
    settings, defaults for those it does not name).

    Raises ValueError naming the parameter for a value that is not an integer in its range.
    """
    values: dict[str, int] = {}
    for name, (default, low, high) in PARAMS.items():
        raw = url.query.get(name)
        if raw is None:
            values[name] = default
            continue
        text = raw if isinstance(raw, str) else raw[-1]
        if not (len(text) <= 10 and text.isascii() and text.isdigit() and low <= int(text) <= high):
            raise ValueError(f"{name} must be an integer from {low} to {high}, got {text[:32]!r}")
        values[name] = int(text)
    settings = Keepalive(
        enabled=bool(values["keepalives"]),
        idle_s=values["keepalives_idle"],
        interval_s=values["keepalives_interval"],
        count=values["keepalives_count"],
        user_timeout_ms=values["tcp_user_timeout"],
    )
    return url.difference_update_query(list(PARAMS)), settings


def set_keepalive(engine: AsyncEngine, settings: Keepalive) -> None:
    """Sets `settings` on the socket of each connection `engine` opens (TCP only: a Unix
    socket has no peer to lose)."""
    options = settings.options()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        sock = tcp_socket(dbapi_conn.driver_connection)
        if sock is None:
            return
        for level, option, value in options:
            sock.setsockopt(level, option, value)


def tcp_socket(driver: Any) -> Any | None:
    """The TCP socket under an asyncpg connection (a TLS one too), or None (a Unix socket)."""
    transport = getattr(driver, "_transport", None)  # asyncpg names no public accessor
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return sock
