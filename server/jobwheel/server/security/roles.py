"""The role table: every RPC of JobService and WorkerService in exactly one row.

A row names the least role that may call its RPCs. Roles nest: reader < producer < operator,
and admin may call everything; worker may call only WorkerService. The README's role table and
the proto comments show the same rows; tests/integration/security/test_roles.py runs every
RPC against it.
"""

from __future__ import annotations

import enum

JOB_SERVICE = "/jobwheel.v1.JobService/"
WORKER_SERVICE = "/jobwheel.v1.WorkerService/"


class Role(enum.Enum):
    READER = "reader"
    PRODUCER = "producer"
    OPERATOR = "operator"
    WORKER = "worker"
    ADMIN = "admin"


ROWS: dict[Role, tuple[str, ...]] = {
    Role.READER: tuple(
        JOB_SERVICE + m
        for m in (
            "GetJob",
            "ListJobs",
            "WatchJobs",
            "GetJobStats",
            "PreviewSchedule",
            "ListJobAttempts",
            "ListQueues",
            "ListWorkers",
        )
    ),
    Role.PRODUCER: (JOB_SERVICE + "EnqueueJob", JOB_SERVICE + "BatchEnqueueJobs"),
    Role.OPERATOR: tuple(
        JOB_SERVICE + m
        for m in (
            "CancelJob",
            "RetryJob",
            "RescheduleJob",
            "TriggerJob",
            "PauseJob",
            "ResumeJob",
            "DeleteJob",
            "CancelJobs",
            "RetryJobs",
            "PauseJobs",
            "ResumeJobs",
            "DeleteJobs",
            "PauseQueue",
            "ResumeQueue",
        )
    ),
    Role.WORKER: tuple(
        WORKER_SERVICE + m
        for m in (
            "LeaseJobs",
            "HeartbeatJob",
            "CompleteJob",
            "FailJob",
            "HeartbeatJobs",
            "CompleteJobs",
            "FailJobs",
            "ReleaseJobs",
        )
    ),
    Role.ADMIN: tuple(
        JOB_SERVICE + m
        for m in (
            "UpdateQueue",
            "CreateEventSubscription",
            "ListEventSubscriptions",
            "DeleteEventSubscription",
        )
    ),
}

# The rows each role may call.
GRANTS: dict[Role, frozenset[Role]] = {
    Role.READER: frozenset({Role.READER}),
    Role.PRODUCER: frozenset({Role.READER, Role.PRODUCER}),
    Role.OPERATOR: frozenset({Role.READER, Role.PRODUCER, Role.OPERATOR}),
    Role.WORKER: frozenset({Role.WORKER}),
    Role.ADMIN: frozenset(Role),
}

ROW_OF: dict[str, Role] = {method: role for role, methods in ROWS.items() for method in methods}
if len(ROW_OF) != sum(len(methods) for methods in ROWS.values()):  # pragma: no cover
    raise AssertionError("an RPC appears in two rows of the role table")

# Calls that change something and are written to the audit log. HeartbeatJob only extends a
# lease the caller already holds, and would repeat every few seconds per running job.
READ_ONLY = frozenset({*ROWS[Role.READER], JOB_SERVICE + "ListEventSubscriptions"})
NOT_AUDITED = READ_ONLY | {WORKER_SERVICE + "HeartbeatJob", WORKER_SERVICE + "HeartbeatJobs"}


def allowed(role: Role, method: str) -> bool:
    """True when `role` may call `method` (a full path, "/pkg.Service/Method")."""
    row = ROW_OF.get(method)
    return row is not None and row in GRANTS[role]


def needed(method: str) -> Role | None:
    """The row of `method`, i.e. the least role that may call it (None: not in the table)."""
    return ROW_OF.get(method)


def parse_role(value: str) -> Role:
    """A role from its name; ValueError naming the valid ones otherwise."""
    try:
        return Role(value)
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {value!r} (one of {names})") from None
