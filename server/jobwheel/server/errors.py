"""Domain errors: what an operation refuses, and why, free of any wire format.

Raised by core.py and the executors; api/errors.py is the one table from them to gRPC status
codes and details.
"""

from __future__ import annotations

from jobwheel.server import model

QUOTE_CHARS = 40


def quote(value: str, limit: int = QUOTE_CHARS) -> str:
    """`value` as a Python literal, cut to its first `limit` characters: errors never echo
    a whole input (a 1 MB id would not fit a client's metadata limit)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class DomainError(Exception):
    """A refusal the caller can act on; `message` says what and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """No `kind` (e.g. "job") named `name` (clipped to QUOTE_CHARS characters)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {quote(name)} not found")
        self.kind = kind
        self.name = clip(name, QUOTE_CHARS)


class IllegalTransition(DomainError):
    """An operator action the job's state does not allow."""

    def __init__(self, job: model.Job, action: str, allowed: tuple[model.JobState, ...]) -> None:
        names = ", ".join(s.name for s in allowed)
        super().__init__(f"cannot {action} job {job.id}: it is {job.state.name} (allowed: {names})")
        self.state = job.state
        self.action = action


class LeaseNotHeld(DomainError):
    """A worker's report about an attempt it does not hold (any more): the job is `job`."""

    def __init__(self, job: model.Job, epoch: int, worker_id: str) -> None:
        if job.state is model.JobState.RUNNING and job.epoch == epoch:
            why = f"it is leased to worker {job.worker_id!r}"
        elif job.state is model.JobState.RUNNING:
            why = f"it runs under epoch {job.epoch} now (attempt {job.attempt})"
        else:
            why = f"it is {job.state.name} (epoch {job.epoch}, attempt {job.attempt})"
        super().__init__(
            f"worker {worker_id!r} does not hold the lease of epoch {epoch} of job {job.id}: {why}"
        )
        self.job = job


class PermissionDenied(DomainError):
    """The caller is known but may not do this (its role or its queue scope)."""


class Unauthenticated(DomainError):
    """The caller could not be identified (no token, a bad one, an unlisted certificate)."""


class InvalidField(DomainError):
    """One field of the request is not acceptable: `field` is its path, `description` why."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"invalid argument: {field}: {description}")
        self.field = field
        self.description = description
