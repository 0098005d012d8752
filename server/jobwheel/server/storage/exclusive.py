"""One server process per SQLite file.

The engine treats every in-process attempt left RUNNING in a SQLite database as lost when it
starts (its process must be gone), so a second server on the same file would re-run the
first one's work. An exclusive lock on "<file>.lock" refuses the second server instead; the
kernel releases it when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os

from jobwheel.server.storage.dialect import lock_file_of
from sqlalchemy.engine import make_url


class DatabaseInUse(RuntimeError):
    """Another server process already serves this SQLite database."""


class ExclusiveUse:
    def __init__(self, url: str) -> None:
        self.path = lock_file_of(make_url(url))
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(
                f"another jobwheel server already uses {self.path.with_suffix('')}: one "
                "server process per SQLite file (use PostgreSQL for several)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
