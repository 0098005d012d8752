"""Scratch PostgreSQL databases for benchmarks: created beside a given one, dropped after."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

from sqlalchemy.engine import make_url


def psql(url: str, sql: str) -> str:
    """Runs `sql` with psql against `url`; its unaligned output, stripped."""
    out = subprocess.run(["psql", url, "-Atqc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


@contextlib.contextmanager
def fresh_database(admin_url: str, name: str) -> Iterator[str]:
    """A new database `name` on `admin_url`'s server (one left by an interrupted run is
    dropped first); yields its URL and drops it on the way out."""
    psql(admin_url, f"DROP DATABASE IF EXISTS {name}")
    psql(admin_url, f"CREATE DATABASE {name}")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
