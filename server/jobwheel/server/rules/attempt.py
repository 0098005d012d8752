"""What executing one attempt produces, whoever runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobwheel.server.model import AttemptOutcome


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
