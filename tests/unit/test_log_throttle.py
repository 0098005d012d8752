"""Repeated log lines: once per interval, with a count; outages without tracebacks."""

from __future__ import annotations

import logging
import sys
from typing import Any

from jobwheel.server import failures
from jobwheel.server.log_throttle import Throttle
from jobwheel.server.storage import DatabaseUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(
    msg: str, *args: object, level: int = logging.WARNING, exc_info: Any = None
) -> logging.LogRecord:
    return logging.LogRecord("jobwheel.x", level, __file__, 1, msg, args, exc_info)


def test_one_line_per_interval_with_a_count() -> None:
    clock = Clock()
    throttle = Throttle(10.0, clock=clock)
    passed = []
    for i in range(23_205):  # the flood, over about 15 s
        clock.now = i * 15 / 23_205
        r = record("cannot store job %s", f"j{i}")
        if throttle.filter(r):
            passed.append(r.getMessage())
    assert len(passed) == 2
    assert passed[0] == "cannot store job j0"
    assert passed[1].endswith("more like this in the last 10s]") and "[15469 more" in passed[1]
    # another template, and anything below WARNING, pass on their own
    assert throttle.filter(record("something else"))
    assert all(throttle.filter(record("debug %s", i, level=logging.INFO)) for i in range(5))


def test_outage_tracebacks_are_left_out() -> None:
    try:
        raise DatabaseUnavailable("the database is unreachable: ConnectionRefusedError")
    except DatabaseUnavailable:
        r = record("upkeep failed", exc_info=sys.exc_info())
    assert Throttle().filter(r)
    assert r.exc_info is None and "ConnectionRefusedError" in r.getMessage()
    try:
        raise ValueError("a bug")
    except ValueError:
        other = record("upkeep failed", exc_info=sys.exc_info())
    assert Throttle().filter(other) and other.exc_info is not None


def test_memory_stays_bounded() -> None:
    throttle = Throttle(clock=Clock(), max_keys=100)
    for i in range(1000):
        throttle.filter(record(f"distinct {i}"))
    assert len(throttle._seen) <= 100


def test_failed_attempts_are_never_held_back() -> None:
    """One line per failed attempt, however many fail at once."""

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    handler = Collect()
    handler.addFilter(Throttle(clock=Clock()))
    failures.log.addHandler(handler)
    try:
        for i in range(50):
            failures.log_failed_attempt(
                job_id=f"j{i}", task="t", queue="q", attempt=1, outcome="failed",
                error="ValueError: boom", retry=False,
            )  # fmt: skip
    finally:
        failures.log.removeHandler(handler)
    assert [r.job_id for r in handler.records] == [f"j{i}" for i in range(50)]  # type: ignore[attr-defined]
    # the same template elsewhere is held back
    throttle = Throttle(clock=Clock())
    assert [throttle.filter(record("job %s failed", i)) for i in range(3)] == [True, False, False]
