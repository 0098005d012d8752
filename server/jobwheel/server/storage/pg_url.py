"""What a PostgreSQL URL may say besides where the database is: libpq's parameters, read once
at the edge.

SQLAlchemy hands each URL parameter to asyncpg.connect as a keyword, and asyncpg refuses the
names libpq users write ("unexpected keyword argument 'sslmode'"): it reads libpq's TLS
parameters and target_session_attrs only from a DSN. Those travel here as a DSN of parameters
alone, beside the host, port, user and database that SQLAlchemy passes. `options=-c NAME=VALUE`
and `application_name` become server settings, `connect_timeout` the connection timeout;
the keepalive parameters are pg_keepalive's. Any other parameter is refused by name, as libpq
refuses one it does not know, instead of failing every connection later.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jobwheel.server.storage.pg_keepalive import PARAMS as KEEPALIVE_PARAMS
from sqlalchemy.engine import URL

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
SESSION_ATTRS = ("any", "primary", "standby", "read-write", "read-only", "prefer-standby")
# libpq's names that asyncpg reads from a DSN: the values each may take (None: a file's path,
# or the key's password, checked when a connection opens)
DSN_PARAMS: dict[str, tuple[str, ...] | None] = {
    "sslmode": SSL_MODES,
    "sslrootcert": None,
    "sslcert": None,
    "sslkey": None,
    "sslpassword": None,
    "sslcrl": None,
    "ssl_min_protocol_version": TLS_VERSIONS,
    "ssl_max_protocol_version": TLS_VERSIONS,
    "target_session_attrs": SESSION_ATTRS,
}
# asyncpg's own spelling of sslmode, taken as its alias
SSL_ALIAS = "ssl"
# seconds a new connection may take when the URL does not say (asyncpg's own is a minute)
CONNECT_TIMEOUT_S = 5
CONNECT_TIMEOUT_MAX_S = 3600
# PostgreSQL keeps this many bytes of a name (NAMEDATALEN - 1)
APPLICATION_NAME_MAX = 63
OTHER_PARAMS = ("application_name", "connect_timeout", "options")
KNOWN = sorted([*DSN_PARAMS, *KEEPALIVE_PARAMS, *OTHER_PARAMS, SSL_ALIAS])


@dataclass(frozen=True)
class Connection:
    """How each connection is opened: asyncpg.connect's extra keywords (`dsn` with the TLS
    parameters, `timeout`) and the server settings it asks for."""

    connect_args: dict[str, Any] = field(default_factory=dict)
    server_settings: dict[str, str] = field(default_factory=dict)


def take_parameters(url: URL) -> tuple[URL, Connection]:
    """(`url` without the parameters this module reads, what they say). The keepalive
    parameters stay for pg_keepalive.take_keepalive.

    Raises ValueError naming the parameter: one not known, one given twice, a value not
    among those it may take.
    """
    values: dict[str, str] = {}
    for name, raw in url.query.items():
        if name not in KNOWN:
            raise ValueError(
                f"unknown parameter {name[:64]!r}; a PostgreSQL URL takes {', '.join(KNOWN)}"
            )
        if not isinstance(raw, str):
            raise ValueError(f"{name} is given {len(raw)} times")
        values[name] = raw
    dsn: dict[str, str] = {}
    spelled = {name: name for name in DSN_PARAMS}  # as the URL names it, for errors
    if SSL_ALIAS in values:
        if "sslmode" in values:
            raise ValueError("ssl and sslmode are one setting: give one of them")
        values["sslmode"] = values.pop(SSL_ALIAS)
        spelled["sslmode"] = SSL_ALIAS
    for name, allowed in DSN_PARAMS.items():
        if name not in values:
            continue
        value, shown = values[name], spelled[name]
        if allowed is not None and value not in allowed:
            raise ValueError(f"{shown} must be one of {', '.join(allowed)}, got {value[:64]!r}")
        if allowed is None and not value.isprintable():
            raise ValueError(f"{shown} must be a path without control characters")
        dsn[name] = value
    connect_args: dict[str, Any] = {"timeout": _timeout(values.get("connect_timeout"))}
    if dsn:
        connect_args["dsn"] = "postgresql://?" + urlencode(dsn)
    settings = _options(values["options"]) if "options" in values else {}
    if "application_name" in values:
        settings["application_name"] = _application_name(values["application_name"])
    taken = [name for name in url.query if name not in KEEPALIVE_PARAMS]
    return url.difference_update_query(taken), Connection(connect_args, settings)


def unreadable_file(connect_args: dict[str, Any]) -> str | None:
    """What is wrong with the files the TLS parameters name (in take_parameters' `dsn`), or
    None: checked when a server opens its store, where asyncpg's own error names no file."""
    for name, value in parse_qsl(urlsplit(connect_args.get("dsn", "")).query):
        if DSN_PARAMS.get(name, ()) is not None or name == "sslpassword":
            continue
        try:
            with open(value, "rb"):
                pass
        except OSError as exc:
            return f"database URL: {name} {value!r}: {exc.strerror or exc}"
    return None


def _timeout(text: str | None) -> int:
    if text is None:
        return CONNECT_TIMEOUT_S
    if not (len(text) <= 10 and text.isascii() and text.isdigit()) or not (
        1 <= int(text) <= CONNECT_TIMEOUT_MAX_S
    ):
        raise ValueError(
            f"connect_timeout must be whole seconds from 1 to {CONNECT_TIMEOUT_MAX_S}, "
            f"got {text[:32]!r}"
        )
    return int(text)


def _application_name(text: str) -> str:
    # PostgreSQL shows other characters as '?' and cuts past 63 bytes: refused rather than
    # shown as something else in pg_stat_activity
    if not (len(text) <= APPLICATION_NAME_MAX and text.isascii() and text.isprintable()):
        raise ValueError(
            f"application_name must be at most {APPLICATION_NAME_MAX} printable ASCII "
            f"characters, got {text[:80]!r}"
        )
    return text


def _options(options: str) -> dict[str, str]:
    """libpq's `options`: `-c NAME=VALUE` (or `-cNAME=VALUE`) items, server settings."""
    settings: dict[str, str] = {}
    try:
        words = iter(shlex.split(options))
    except ValueError as exc:
        raise ValueError(f"unsupported PostgreSQL options {options!r}: {exc}") from exc
    for word in words:
        item = next(words, "") if word == "-c" else word.removeprefix("-c")
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"unsupported PostgreSQL options {options!r}")
        settings[name] = value
    return settings
