"""What executing one attempt produces, whoever runs it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: Outcome
    result: Any = None
    error: str = ""
    # False: fail the job now, whatever attempts are left (e.g. HTTP 410).
    retryable: bool = True
    # A floor for the next wait (e.g. an HTTP Retry-After), in microseconds.
    retry_after: int = 0
