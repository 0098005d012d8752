"""The domain: plain data, no I/O.

Times are integers of microseconds since the Unix epoch (UTC): exact, cheap to compare and to
store in both SQLite and PostgreSQL, and what the timer wheel works in. Durations are
microseconds too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from jobwheel.server.frozen_init import quick_frozen_init

Micros = int
SECOND: Micros = 1_000_000
DEFAULT_QUEUE = "default"
DEFAULT_CATCHUP_WINDOW: Micros = 86_400 * SECOND
# Payload, result and progress: at most this many bytes each, encoded as protobuf (so a job
# always fits one 4 MiB reply; see api/reply_size.py).
MAX_DOCUMENT_BYTES = 1 << 20
# The range of google.protobuf.Timestamp (years 1 to 9999), which every client can decode:
# no time outside it is accepted, computed or stored.
MIN_TIME: Micros = -62_135_596_800 * SECOND  # 0001-01-01T00:00:00Z
MAX_TIME: Micros = 253_402_300_800 * SECOND - 1  # 9999-12-31T23:59:59.999999Z


def clamp_time(time: Micros) -> Micros:
    """A computed time (now + a wait) held inside the Timestamp range."""
    return max(MIN_TIME, min(time, MAX_TIME))


# Worker ids of the server's own in-process executor start with this (remote workers may
# not use it): an attempt held by a dead server process is recognisable by it.
INPROCESS_PREFIX = "inprocess@"
# How long an attempt stays held without a heartbeat (a worker may ask for another length).
DEFAULT_LEASE = 30 * SECOND


class JobState(enum.StrEnum):
    """Where a job is in its life (rules/states.py holds the transitions).

    SCHEDULED  waits for next_run_time (a delayed or recurring job)
    QUEUED     due: waits for an executor (in process or a remote worker)
    RUNNING    an executor holds its current attempt (under a lease)
    RETRYING   an attempt failed; waits for next_run_time, the end of the backoff
    COMPLETED, FAILED, CANCELLED  terminal: nothing more runs
    PAUSED     held by an operator until resumed
    """

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class AttemptOutcome(enum.StrEnum):
    """How one attempt ended (RUNNING while it has not). Executors report SUCCEEDED,
    FAILED, TIMED_OUT or CANCELLED; LOST is the engine's verdict on an executor that
    vanished (its lease expired, or its process died)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"


class EventType(enum.StrEnum):
    """A change recorded in the event log (WatchJobs, event subscriptions), one per
    transition; PROGRESS carries a worker's progress report, MISFIRE_SKIPPED occurrences
    of a recurring job that its misfire or overlap policy dropped."""

    ENQUEUED = "enqueued"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    STARTED = "started"
    ATTEMPT_FAILED = "attempt_failed"
    RETRY_SCHEDULED = "retry_scheduled"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    RESUMED = "resumed"
    RESCHEDULED = "rescheduled"
    DELETED = "deleted"
    MISFIRE_SKIPPED = "misfire_skipped"
    PROGRESS = "progress"
    ATTEMPT_LOST = "attempt_lost"


class OverlapPolicy(enum.StrEnum):
    """What a recurring job's occurrence does while the previous execution still runs:
    SKIP it, BUFFER_ONE (keep one waiting until the previous ends), ALLOW_ALL (run it
    beside, as a one-off child job) or CANCEL_OTHER (cancel the previous and run)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW_ALL = "allow_all"
    CANCEL_OTHER = "cancel_other"


class MisfirePolicy(enum.StrEnum):
    """What a recurring job does with occurrences missed by more than the misfire grace
    (the server was down, or the job paused): SKIP them, RUN_ONCE for all of them, or
    RUN_ALL of them within the schedule's catch-up window."""

    SKIP = "skip"
    RUN_ONCE = "run_once"
    RUN_ALL = "run_all"


class DstGapPolicy(enum.StrEnum):
    """A cron time that does not exist on a spring-forward day: SHIFT_FORWARD by the gap
    (02:30 becomes 03:30), or SKIP that day."""

    SHIFT_FORWARD = "shift_forward"
    SKIP = "skip"


class DstFoldPolicy(enum.StrEnum):
    """A cron time that exists twice on a fall-back day: run at the FIRST, the SECOND or
    BOTH."""

    FIRST = "first"
    SECOND = "second"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The effective policy: defaults are filled in at enqueue (30 s, x4, capped at 5 m)."""

    max_attempts: int = 4
    initial_backoff: Micros = 30 * SECOND
    max_backoff: Micros = 300 * SECOND
    multiplier: float = 4.0
    jitter: float = 0.1


@quick_frozen_init  # read back per scheduled job
@dataclass(frozen=True, slots=True)
class Schedule:
    """When a job runs. A relative `delay` is resolved into `start_time` at enqueue."""

    start_time: Micros | None = None
    cron: str = ""
    time_zone: str = ""
    interval: Micros | None = None
    limit: int = 0
    end_time: Micros | None = None
    jitter: Micros = 0
    overlap_policy: OverlapPolicy = OverlapPolicy.SKIP
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    catchup_window: Micros = DEFAULT_CATCHUP_WINDOW
    dst_gap_policy: DstGapPolicy = DstGapPolicy.SHIFT_FORWARD
    dst_fold_policy: DstFoldPolicy = DstFoldPolicy.FIRST
    # An interval schedule without start_time: its first occurrence, fixed when the schedule
    # is set; every occurrence is anchor + k * interval, start to start (not in the proto).
    anchor: Micros | None = None

    @property
    def recurring(self) -> bool:
        return bool(self.cron) or self.interval is not None


@dataclass(frozen=True, slots=True)
class HttpTarget:
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)

    def key(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        """A hashable form (headers sorted), for caches of what jobs with equal targets share."""
        return self.url, self.method, tuple(sorted(self.headers.items()))


# not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, which
# costs a batch of 1,000 jobs ~2.5 ms; nothing changes a NewJob after validation (replace())
@dataclass(slots=True)
class NewJob:
    """A validated enqueue request; the store assigns nothing but the row order."""

    id: str
    queue: str
    task: str
    payload: dict[str, Any]
    labels: dict[str, str]
    priority: int
    state: JobState
    schedule: Schedule | None
    retry_policy: RetryPolicy
    timeout: Micros | None
    idempotency_key: str | None
    http: HttpTarget | None
    create_time: Micros
    next_run_time: Micros | None
    # W3C trace context of the enqueue (empty without tracing): attempts join that trace
    traceparent: str = ""


@dataclass(slots=True)
class Job:
    """A job as stored. Times in µs since the epoch (UTC), durations in µs.

    An execution is one run of the job (one per occurrence, for a recurring job), made of
    attempts (the first try and its retries). `execution_count` counts executions started;
    `attempt` is the number of the current execution's latest attempt, from 1 (0 before the
    first). `epoch` counts the job's attempts over all its executions: the fencing number of
    the current attempt's lease, so a report about any older attempt, of this execution or
    an earlier one, changes nothing. `released_attempts` of them were released by a graceful
    stop and are not charged against retry_policy.max_attempts. `seq` is the insertion order
    the store assigns: the key of stable pagination. `worker_id` and `lease_expire_time`
    name who holds a RUNNING attempt and until when. `skipped_count` counts occurrences
    dropped by the overlap or misfire policy.
    """

    id: str
    queue: str
    task: str
    payload: dict[str, Any]
    labels: dict[str, str]
    priority: int
    state: JobState
    schedule: Schedule | None
    retry_policy: RetryPolicy
    timeout: Micros | None
    idempotency_key: str | None
    http: HttpTarget | None
    create_time: Micros
    update_time: Micros
    next_run_time: Micros | None
    attempt: int = 0
    execution_count: int = 0
    # attempts of this execution released by a graceful stop: on record, not charged against
    # the retry policy's max_attempts
    released_attempts: int = 0
    start_time: Micros | None = None
    end_time: Micros | None = None
    last_error: str = ""
    result: Any = None
    cancel_reason: str = ""
    skipped_count: int = 0
    progress: dict[str, Any] | None = None
    worker_id: str = ""
    lease_expire_time: Micros | None = None
    traceparent: str = ""
    # Insertion order, assigned by the store: the key of stable pagination.
    seq: int = 0
    epoch: int = 0

    @property
    def recurring(self) -> bool:
        return self.schedule is not None and self.schedule.recurring


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Half-open [start, end); either bound may be None."""

    start: Micros | None = None
    end: Micros | None = None


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Every set field must match; within a collection, any value matches."""

    ids: tuple[str, ...] = ()
    states: tuple[JobState, ...] = ()
    queues: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    payload: tuple[tuple[str, Any], ...] = ()
    create_time: TimeRange | None = None
    next_run_time: TimeRange | None = None
    end_time: TimeRange | None = None
    recurring: bool | None = None
    # ids starting with this text (the dashboard's search by a shortened id)
    id_prefix: str = ""

    @property
    def empty(self) -> bool:
        return self == JobFilter()


@dataclass(frozen=True, slots=True)
class Attempt:
    id: str
    job_id: str
    execution: int
    number: int
    start_time: Micros
    end_time: Micros | None
    outcome: AttemptOutcome
    error: str = ""
    worker_id: str = ""
    result: Any = None


@quick_frozen_init  # built per job
@dataclass(frozen=True, slots=True)
class Event:
    revision: int
    type: EventType
    job: Job
    time: Micros


@dataclass(frozen=True, slots=True)
class QueueSettings:
    name: str
    paused: bool = False
    max_concurrency: int | None = None  # None: the server's default
    max_dispatches_per_second: float = 0.0  # 0: no limit


@dataclass(frozen=True, slots=True)
class JobStats:
    by_state: dict[JobState, int]
    by_queue: dict[str, int]
    completed_last_minute: int
    # durations of successful attempts in the last hour, for percentiles
    recent_durations: list[Micros]
    # more queues hold matching jobs than by_queue lists (the MAX_STATS_QUEUES largest)
    queues_truncated: bool = False


@dataclass(frozen=True, slots=True)
class EventSubscription:
    id: str
    url: str
    event_types: frozenset[EventType]
    secret: str
    create_time: Micros
    from_revision: int = 0  # events after this one are delivered
