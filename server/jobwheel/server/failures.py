"""How an attempt's error is written, stored, read back and logged.

The stored text is the summary "Type: message", then, when there is one, a blank line and the
traceback ("Traceback (most recent call last): ..."). One text column keeps it (attempts.error,
jobs.last_error); `split` gives the parts the API returns separately.

Bounds, so an error never crowds a reply: the summary is cut to MAX_SUMMARY characters, the
traceback keeps at most MAX_FRAMES frames per exception (the innermost), cuts any frame or
exception line to MAX_LINE characters, and keeps its last MAX_TRACEBACK characters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from jobwheel.server.model import AttemptOutcome, JobState

if TYPE_CHECKING:
    from jobwheel.server.rules.states import Settlement

MAX_SUMMARY = 2048
MAX_TRACEBACK = 8192
MAX_FRAMES = 30
MAX_LINE = 1024  # per frame or exception line of a traceback
TRACEBACK_MARK = "Traceback (most recent call last):"
_SEPARATOR = "\n\n" + TRACEBACK_MARK
_ELLIPSIS = "…"
_TYPE = re.compile(r"^[A-Za-z_][\w.]*$")
# Frames of the machinery that calls a handler: left out so a traceback starts at the handler.
_PLUMBING = tuple(
    os.path.dirname(path) + os.sep
    for path in (asyncio.__file__, concurrent.futures.__file__, os.path.dirname(__file__))
)

log = logging.getLogger("jobwheel.server.attempts")


class Reported(Exception):
    """An expected failure whose message says all there is (a subscriber that refused an
    event): stored and logged without a traceback, which would only show the server's own
    frames. `retryable` False fails the job at once; `retry_after` (µs) is a floor for the
    wait before the next attempt (a receiver's Retry-After)."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ErrorParts:
    """`summary` "Type: message", `type` the exception class name ("" if unknown)."""

    summary: str
    type: str
    traceback: str


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


def summary(exc: BaseException) -> str:
    """ "Type: message" (just "Type" for an empty message), at most MAX_SUMMARY characters."""
    try:
        message = str(exc)
    except Exception:  # a handler's exception whose __str__ fails still ends its attempt
        message = "<message not printable>"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return _cut(text, MAX_SUMMARY)


def timed_out(seconds: float) -> str:
    """The error of an attempt that ran past its job's timeout, whoever ran it."""
    return f"TimeoutError: exceeded {seconds:g}s"


def stored(error: str) -> str:
    """An attempt's error text as stored, whoever wrote it: U+0000 (which PostgreSQL cannot
    store) replaced by U+FFFD, the summary cut to MAX_SUMMARY characters, a traceback kept."""
    if len(error) <= MAX_SUMMARY and "\x00" not in error:
        return error
    error = error.replace("\x00", "\ufffd")
    at = error.find(_SEPARATOR)
    head, rest = (error, "") if at < 0 else (error[:at], error[at:])
    return _cut(head, MAX_SUMMARY) + rest


def _cut_piece(piece: str) -> str:
    if len(piece) <= MAX_LINE:
        return piece
    return piece[: MAX_LINE - 2] + _ELLIPSIS + "\n"


def _handler_frames(tb: TracebackType | None) -> TracebackType | None:
    """`tb` without the leading frames of asyncio, the thread pool and this server."""
    start = tb
    while start is not None and start.tb_frame.f_code.co_filename.startswith(_PLUMBING):
        start = start.tb_next
    return start or tb


def format_traceback(exc: BaseException) -> str:
    """The bounded traceback of `exc` (chained causes included); "" if it has none."""
    tb = _handler_frames(exc.__traceback__)
    if tb is None:
        return ""
    formatted = traceback.TracebackException(type(exc), exc, tb, limit=-MAX_FRAMES).format()
    # each piece is a frame or an exception line: a huge message is cut where it stands
    text = "".join(_cut_piece(piece) for piece in formatted).rstrip("\n")
    if len(text) > MAX_TRACEBACK:
        text = _ELLIPSIS + text[-(MAX_TRACEBACK - 1) :]
    return text


def error_text(exc: BaseException) -> str:
    """What is stored for an attempt that raised `exc`: summary, blank line, traceback
    (none for a Reported failure)."""
    tb = "" if isinstance(exc, Reported) else format_traceback(exc)
    head = summary(exc)
    return f"{head}\n\n{tb}" if tb else head


def split(text: str) -> ErrorParts:
    """The parts of a stored error text (any text: remote workers send their own)."""
    at = text.find(_SEPARATOR)
    head, tb = (text, "") if at < 0 else (text[:at], text[at + 2 :])
    name = head.split(":", 1)[0] if head else ""
    return ErrorParts(summary=head, type=name if _TYPE.match(name) else "", traceback=tb)


def log_failed_attempt(
    *, job_id: str, task: str, queue: str, attempt: int, outcome: str, error: str, retry: bool
) -> None:
    """One WARNING record per failed attempt: the message ends with the summary, the job's
    fields (job_id, task, queue, attempt) and `error_type` come as `extra`, and the traceback
    as the record's exception text, so the text format prints it under the line and the JSON
    format as `traceback`."""
    if not log.isEnabledFor(logging.WARNING):
        return
    parts = split(error)
    record = log.makeRecord(
        log.name,
        logging.WARNING,
        __file__,
        0,
        "job %s attempt %d failed (task %s, queue %s, %s, %s): %s",
        (job_id, attempt, task, queue, outcome, "will retry" if retry else "no retry",
         parts.summary),
        None,
        extra={"job_id": job_id, "task": task, "queue": queue, "attempt": attempt,
               "error_type": parts.type},
    )  # fmt: skip
    # the traceback is text (a remote worker's, or one kept after its exception is gone):
    # formatters print exc_text as they would a live exception's
    record.exc_text = parts.traceback or None
    log.handle(record)


_FAILED = (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT)


def log_if_failed(s: Settlement) -> None:
    """The log record of an applied settlement that ends a failed or timed-out attempt."""
    if s.ended.outcome in _FAILED:
        log_failed_attempt(
            job_id=s.ended.job_id,
            task=s.after.task,
            queue=s.after.queue,
            attempt=s.ended.attempt,
            outcome=s.ended.outcome.value,
            error=s.ended.error,
            retry=s.after.state is JobState.RETRYING,
        )
