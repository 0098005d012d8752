"""What executing one attempt produces, whoever runs it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict
from jobwheel.server.frozen_init import quick_frozen_init
from jobwheel.server.json_rules import json_problem
from jobwheel.server.model import MAX_DOCUMENT_BYTES, AttemptOutcome

# JSON text grows at most about 5.5 times as a protobuf Value (an array of small numbers).
_GROWTH = 6


def oversized(value: Any, text_bytes: int) -> bool:
    """True when the JSON value `value` (whose JSON text has `text_bytes` bytes) encodes to
    more than MAX_DOCUMENT_BYTES as a google.protobuf.Value. Short texts are not measured."""
    if text_bytes * _GROWTH <= MAX_DOCUMENT_BYTES:
        return False
    return ParseDict(value, struct_pb2.Value()).ByteSize() > MAX_DOCUMENT_BYTES


# The contract's numbers are doubles (google.protobuf.Value): an integer past this range
# could be stored, and then no reply could carry its job.
_DOUBLE_MAX = sys.float_info.max
_DOUBLE_DIGITS = 309  # the digits of the largest integer a double holds, plus one


def _past_double(value: Any) -> bool:
    if isinstance(value, int):
        return not isinstance(value, bool) and abs(value) > _DOUBLE_MAX
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_past_double(item) for item in items)


def result_problem(value: Any, text_bytes: int) -> str | None:
    """Why the JSON value `value` (whose JSON text has `text_bytes` bytes) cannot be stored
    as a job's result, or None: the rules of every document (json_rules), and at most
    MAX_DOCUMENT_BYTES encoded."""
    found = json_problem(value)
    if found is not None:
        problem, path = found
        return f"result {problem}" + (f" at {'.'.join(path[:8])}" if path else "")
    if text_bytes > _DOUBLE_DIGITS and _past_double(value):  # json_problem bounded the depth
        return "result holds a number past the range of a double"
    if oversized(value, text_bytes):
        return f"result is larger than {MAX_DOCUMENT_BYTES} bytes encoded"
    return None


@quick_frozen_init  # built per job
@dataclass(frozen=True, slots=True)
class AttemptResult:
    """An executor's report. `outcome` is SUCCEEDED, FAILED, TIMED_OUT or CANCELLED (LOST
    and RUNNING are the engine's, never an executor's)."""

    outcome: AttemptOutcome
    result: Any = None
    error: str = ""
    # False: fail the job now, whatever attempts are left (e.g. HTTP 410).
    retryable: bool = True
    # A floor for the next wait (e.g. an HTTP Retry-After), in microseconds.
    retry_after: int = 0


# The outcomes an executor reports (an AttemptResult's).
EXECUTOR_OUTCOMES = (
    AttemptOutcome.SUCCEEDED,
    AttemptOutcome.FAILED,
    AttemptOutcome.TIMED_OUT,
    AttemptOutcome.CANCELLED,
)
