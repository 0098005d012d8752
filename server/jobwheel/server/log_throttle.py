"""Repeated log lines are written once per interval, with a count of those held back.

During an outage every loop and every call fails the same way many times a second; one line
per kind of failure per interval says as much and keeps the log readable. An outage's
traceback says nothing the message does not, so it is left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from jobwheel.server.storage import DatabaseUnavailable

DEFAULT_INTERVAL = 10.0
# Loggers never throttled: one line per failed attempt is promised (failures.py)
UNTHROTTLED = frozenset({"jobwheel.server.attempts"})


class Throttle(logging.Filter):
    """A handler filter: records of one logger, level and message template pass at most once
    per `interval` seconds; the next one to pass tells how many were held back."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.level = level
        self.clock = clock
        self.max_keys = max_keys
        # (logger, level, template) -> (when the last one passed, how many held back since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or record.name in UNTHROTTLED:
            return True
        key = (record.name, record.levelno, str(record.msg))
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, DatabaseUnavailable):
            record.msg = f"{record.msg} ({exc})"
            record.exc_info = None
            record.exc_text = None
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= self.max_keys:
            self._seen.clear()  # bounded memory, whatever varies in the templates
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{last[1]} more like this in the last {now - last[0]:.0f}s]"
        return True


def install(interval: float = DEFAULT_INTERVAL) -> None:
    """Adds a Throttle to every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(Throttle(interval))
