"""SQLite: the write-ahead log is copied back into the database file by a thread of its own.

By default SQLite checkpoints inside the COMMIT that takes the log past 1,000 pages, on the
connection that committed: the server's only writer, so a dispatch cycle or a group commit
waited about 7 ms for it (1,000 pages copied and the file synced) every 4 MB written, about
every other commit of a 1,000-job batch (1.5 µs of a batch enqueue's 5 µs a job of commit).
Here a thread with its own connection runs a PASSIVE checkpoint (it waits for no reader or
writer) every CHECKPOINT_INTERVAL_S; SQLite runs it without Python's lock, so it takes the
machine's other core while the writer goes on. The writer checkpoints itself only past
WRITER_AUTOCHECKPOINT_PAGES, should the thread fall behind or stop.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_S = 0.05
# the writer's own threshold (pages of the log, 4 KiB each: 40 MiB) while the thread runs
WRITER_AUTOCHECKPOINT_PAGES = 10_000


class WalCheckpointer:
    """Checkpoints the SQLite database that `connect()` opens (`name` in log lines) from a
    daemon thread between `start()` and `stop()`; `passes` counts the checkpoints run. A
    failed checkpoint is logged (once per stretch of failures) and the next one tried an
    interval later; a connection that cannot be opened ends the thread, logged, and leaves
    the checkpoints to the writer."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        name: str,
        synchronous: str,
        interval: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.connect = connect
        self.name = name
        self.synchronous = synchronous
        self.interval = interval
        self.passes = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="jobwheel-wal-checkpoints", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Ends the thread after the checkpoint it is running, if any (blocks until then)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:
            db = self.connect()
            db.isolation_level = None
            # the same syncs as the writer's checkpoints (FULL: the log, then the file)
            db.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            log.warning("SQLite checkpoints of %s left to the writer: %s", self.name, exc)
            return
        try:
            failing = False
            while not self._stopping.wait(self.interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    if not failing:  # the writer's calls report an outage themselves
                        log.warning("SQLite checkpoint of %s failed: %s", self.name, exc)
                    failing = True
                    continue
                failing = False
                self.passes += 1
        finally:
            db.close()
