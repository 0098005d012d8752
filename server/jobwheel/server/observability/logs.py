"""Log set-up: `text` for people, `json` (one object per line) for log pipelines.

A JSON line holds `time` (RFC 3339, UTC), `level`, `logger`, `message`, the job's fields when
the record carries them (`extra={"job_id": ..., ...}`: job_id, task, queue, attempt,
worker_id, principal), any other `extra=` fields, and `traceback` when the record has
exception info (the exception, also as `exc_type`/`exc_message`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

JOB_FIELDS = ("job_id", "task", "queue", "attempt", "worker_id", "principal")
FORMATS = ("text", "json")
# what every LogRecord has: anything else was given through `extra=`
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# A message may quote what callers sent (a worker's error text, a job's task): escaped as
# Python writes them, a newline cannot start a forged record, nor an ESC reach a terminal.
_TEXT_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}
# json.dumps escapes the C0 controls only; these also end a line for some readers
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields given to the log call through `extra=`."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = extras(record)
        for name in JOB_FIELDS:  # job fields first, in a fixed order
            if name in fields:
                out[name] = _plain(fields.pop(name))
        for name, value in fields.items():
            out.setdefault(name, _plain(value))
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, exc, tb = record.exc_info
            out["exc_type"] = exc_type.__name__
            out["exc_message"] = str(exc)
            out["traceback"] = "".join(traceback.format_exception(exc_type, exc, tb))
        elif record.exc_text:
            out["traceback"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, default=str).translate(_JSON_ESCAPES)


class TextFormatter(logging.Formatter):
    """The classic line, with the job's fields appended as key=value (those the message does
    not already state so: an audit line names its principal)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # the date and time to the second, formatted once per second (lines come in bursts)
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record.__dict__  # the job fields are never standard attributes
        said = f" {record.message} "  # a field the message states as key=value is not repeated
        pairs = (f"{k}={fields[k]}" for k in JOB_FIELDS if fields.get(k) not in (None, ""))
        tail = " ".join(pair for pair in pairs if f" {pair} " not in said)
        return (f"{line} [{tail}]" if tail else line).translate(_TEXT_ESCAPES)


def emit(logger: logging.Logger, level: int, message: str, extra: dict[str, Any]) -> None:
    """`logger.log(level, message, extra=extra)` for a line written on every call: `message`
    is final (no %-arguments), and the caller's file and line, which neither format prints,
    are not looked up."""
    if logger.isEnabledFor(level):
        record = logger.makeRecord(
            logger.name, level, "(unknown file)", 0, message, (), None, "(unknown function)", extra
        )
        logger.handle(record)


def configure(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Sends the root logger's records to `stream` (stderr) in `fmt`, at `level`."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # neither format prints the process or thread: not looked up for every record
    logging.logProcesses = logging.logMultiprocessing = logging.logThreads = False
    # asyncio's own debug lines ("Using selector") say nothing about jobwheel
    logging.getLogger("asyncio").setLevel(max(root.level, logging.INFO))


class _Hold(logging.Filter):
    def __init__(
        self, handler: logging.Handler, into: list[tuple[logging.Handler, logging.LogRecord]]
    ) -> None:
        super().__init__()
        self.handler = handler
        self.into = into

    def filter(self, record: logging.LogRecord) -> bool:
        self.into.append((self.handler, record))
        return False


class HeldLines:
    """Holds back what the root logger's handlers get until `release()` writes it (in order,
    with its original times) or `drop()` forgets it. The server's start-up lines wait so that
    a start that fails prints its one error line alone, and one that works begins with the
    line saying what runs."""

    def __init__(self) -> None:
        self._held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self._holds: list[tuple[logging.Handler, _Hold]] = []
        for handler in logging.getLogger().handlers:
            hold = _Hold(handler, self._held)
            handler.filters.insert(0, hold)  # before any other filter: they see it on release
            self._holds.append((handler, hold))

    def _stop(self) -> list[tuple[logging.Handler, logging.LogRecord]]:
        for handler, hold in self._holds:
            handler.removeFilter(hold)
        self._holds = []
        held, self._held = self._held, []
        return held

    def release(self) -> None:
        for handler, record in self._stop():
            handler.handle(record)

    def drop(self) -> None:
        self._stop()
