"""The jobs gauge's reading of events: whatever an attempt's end writes, the events say the
job left RUNNING (or that a recount is needed), and the counters see each outcome once."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.model import SECOND, Event, EventType, JobState
from jobwheel.server.observability.job_metrics import (
    UNKNOWN,
    Counts,
    JobMetrics,
    changes,
    previous_state,
)
from jobwheel.server.observability.metrics import Metrics
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import EXECUTOR_OUTCOMES, AttemptResult
from prometheus_client import generate_latest

from tests.unit.test_outcomes import NOW, running

RESULTS = st.builds(
    AttemptResult,
    outcome=st.sampled_from(list(EXECUTOR_OUTCOMES)),
    error=st.just("E: x"),
    retryable=st.booleans(),
    retry_after=st.integers(0, 60 * SECOND),
)
SCHEDULES = st.one_of(
    st.none(),
    st.builds(
        model.Schedule,
        start_time=st.just(NOW - 3600 * SECOND),
        interval=st.integers(1, 3600).map(lambda s: s * SECOND),
        limit=st.integers(0, 5),
    ),
)


def events_of(settlement: states.Settlement, first_revision: int = 1) -> list[Event]:
    """The events the store appends for a settlement (one transaction, one time)."""
    return [
        Event(first_revision + i, etype, settlement.after, settlement.now)
        for i, etype in enumerate(settlement.events)
    ]


@given(
    attempt=st.integers(1, 6),
    max_attempts=st.integers(1, 6),
    executions=st.integers(1, 5),
    schedule=SCHEDULES,
    result=RESULTS,
    lost=st.booleans(),
    counts=st.booleans(),
)
def test_an_attempt_end_leaves_running(
    attempt: int,
    max_attempts: int,
    executions: int,
    schedule: model.Schedule | None,
    result: AttemptResult,
    lost: bool,
    counts: bool,
) -> None:
    job = running(
        attempt=min(attempt, max_attempts),
        retry_policy=model.RetryPolicy(max_attempts=max_attempts),
        schedule=schedule,
        execution_count=executions,
    )
    settlement = (
        states.lost(job, NOW, "gone", counts=counts)
        if lost
        else states.settle(job, result, NOW, 0.5)
    )
    events = events_of(settlement)
    [group] = changes(events)  # one change of one job
    prev = previous_state(group)
    if prev is UNKNOWN:
        # only an ended schedule's lone COMPLETED is ambiguous (a late job can end that way
        # without running); the gauge then recounts
        assert settlement.events == (EventType.COMPLETED,) and job.recurring
    else:
        assert prev is JobState.RUNNING


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=30))
def test_changes_split_by_job_and_transaction(keys: list[tuple[int, int]]) -> None:
    job = running()
    events = [
        Event(i + 1, EventType.PROGRESS, model.Job(**{**_fields(job), "id": f"j{j}"}), t)
        for i, (j, t) in enumerate(keys)
    ]
    groups = changes(events)
    assert [e for g in groups for e in g] == events  # nothing lost or reordered
    for group in groups:
        assert len({(e.job.id, e.time) for e in group}) == 1
    for before, after in itertools.pairwise(groups):
        assert (before[-1].job.id, before[-1].time) != (after[0].job.id, after[0].time)


def _fields(job: model.Job) -> dict[str, object]:
    return {name: getattr(job, name) for name in model.Job.__dataclass_fields__}


def test_promotion_and_claim_are_read_from_the_job() -> None:
    retrying = running(attempt=2, state=JobState.QUEUED)
    first = running(attempt=0, state=JobState.QUEUED)
    assert previous_state([Event(1, EventType.QUEUED, retrying, NOW)]) is JobState.RETRYING
    assert previous_state([Event(1, EventType.QUEUED, first, NOW)]) is JobState.SCHEDULED
    assert previous_state([Event(1, EventType.STARTED, running(), NOW)]) is JobState.QUEUED
    assert previous_state([Event(1, EventType.ENQUEUED, first, NOW)]) is None
    # a fire promotes and claims in one transaction: one change of the job
    fired = [Event(1, EventType.QUEUED, first, NOW), Event(2, EventType.STARTED, running(), NOW)]
    assert changes(fired) == [fired]
    assert previous_state(fired) is JobState.SCHEDULED
    refired = [
        Event(1, EventType.QUEUED, retrying, NOW),
        Event(2, EventType.STARTED, running(attempt=3), NOW),
    ]
    assert previous_state(refired) is JobState.RETRYING
    for ambiguous in (EventType.CANCELLED, EventType.PAUSED, EventType.DELETED):
        assert previous_state([Event(1, ambiguous, first, NOW)]) is UNKNOWN


# a job's changes in order: each a transaction's events (a promotion and its claim, a failed
# attempt and its retry share one), the job's state after it, and its attempt
_LIFE = [
    ((EventType.ENQUEUED,), JobState.QUEUED, 0),
    ((EventType.STARTED,), JobState.RUNNING, 1),
    ((EventType.ATTEMPT_FAILED, EventType.RETRY_SCHEDULED), JobState.RETRYING, 1),
    ((EventType.QUEUED, EventType.STARTED), JobState.RUNNING, 2),
    ((EventType.COMPLETED,), JobState.COMPLETED, 2),
]
QUEUES = ["a", "b", "c", "d"]


def lives(picks: list[tuple[int, int, int]]) -> list[Event]:
    """Events of jobs moving through _LIFE, one change per pick (job, queue, task), each
    change's events sharing its time."""
    progress: dict[str, int] = {}
    homes: dict[str, tuple[str, str]] = {}  # job -> (queue, task), from its first pick
    events: list[Event] = []
    for n, (job_no, queue_no, task_no) in enumerate(picks):
        job_id = f"j{job_no}"
        step = progress.get(job_id, 0)
        if step == len(_LIFE):
            continue
        progress[job_id] = step + 1
        types, state, attempt = _LIFE[step]
        queue, task = homes.setdefault(job_id, (QUEUES[queue_no], f"t{task_no}"))
        job = running(
            id=job_id,
            queue=queue,
            task=task,
            state=state,
            attempt=attempt,
            start_time=None if step == 0 else NOW - 1000 * (n + 1),
        )
        for etype in types:
            events.append(Event(len(events) + 1, etype, job, NOW + n))
    return events


async def _fed(events: list[Event], chunk: int, cap: int) -> str:
    """The exposition of a JobMetrics fed `events` (committed here) in batches of about
    `chunk` changes (0: each change alone)."""

    async def recount() -> tuple[int, Counts]:
        return 0, {}

    metrics = Metrics(max_label_values=cap)
    tap = JobMetrics(metrics, recount)
    await tap.start()
    groups = changes(events)
    size = chunk or 1
    for start in range(0, len(groups), size):
        batch = [e for group in groups[start : start + size] for e in group]
        tap.count_local(batch)  # as the server: the commit's own tap, then the bus's
        tap.on_events(batch)
    await tap.close()
    # without the series' creation times
    lines = generate_latest(metrics.registry).decode().splitlines()
    return "\n".join(line for line in lines if "_created" not in line)


@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 2)), max_size=40),
    st.integers(2, 12),
    st.integers(1, 3),
)
async def test_a_batch_of_changes_is_exported_as_the_changes_one_by_one(
    picks: list[tuple[int, int, int]], chunk: int, cap: int
) -> None:
    # the same series, values and label choices (`cap` queue labels, then "other") whether a
    # transaction's events come alone or many at once, series that net to 0 included
    events = lives(picks)
    batched = await _fed(events, chunk, cap)
    assert batched == await _fed(events, 0, cap)
    # and each event counted: the counters' totals over every series
    totals: dict[str, float] = {}
    for line in batched.splitlines():
        name = line.partition("{")[0]
        if not line.startswith("#") and name.endswith("_total"):
            totals[name] = totals.get(name, 0) + float(line.rpartition(" ")[2])
    for etype, name in (
        (EventType.ENQUEUED, "enqueued"),
        (EventType.STARTED, "started"),
        (EventType.RETRY_SCHEDULED, "retried"),
        (EventType.COMPLETED, "completed"),
    ):
        expected = sum(e.type is etype for e in events)
        assert totals.get(f"jobwheel_jobs_{name}_total", 0) == expected


async def test_a_recount_gives_labels_to_the_queues_of_changes_that_came_during_it() -> None:
    # labels go to queues in the order their changes are seen: the changes that wait for a
    # recount before the counts it read
    metrics = Metrics(max_label_values=1)
    release = asyncio.Event()
    tap: JobMetrics

    async def recount() -> tuple[int, Counts]:
        tap.on_events(
            [Event(5, EventType.ENQUEUED, running(queue="a", state=JobState.QUEUED), NOW)]
        )
        await release.wait()
        return 4, {(JobState.QUEUED, "b", "t"): 2}

    tap = JobMetrics(metrics, recount)
    starting = asyncio.create_task(tap.start())
    await asyncio.sleep(0)
    release.set()
    await starting
    sample = metrics.registry.get_sample_value
    assert sample("jobwheel_jobs", {"state": "queued", "queue": "a"}) == 1
    assert sample("jobwheel_jobs", {"state": "queued", "queue": "other"}) == 2
