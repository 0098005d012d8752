"""The jobs gauge's reading of events: whatever an attempt's end writes, the events say the
job left RUNNING (or that a recount is needed), and the counters see each outcome once."""

from __future__ import annotations

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


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(["a", "b"]), st.integers(0, 2)),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 4),
)
async def test_a_batch_of_events_counts_as_each_event_alone(
    steps: list[tuple[int, str, int]], chunks: int
) -> None:
    # jobs go ENQUEUED -> STARTED -> COMPLETED (or a failed attempt, then a lost one), in
    # batches of several transactions: the summed updates equal one update per event
    lifecycle = [
        (EventType.ENQUEUED, JobState.QUEUED),
        (EventType.STARTED, JobState.RUNNING),
        (EventType.ATTEMPT_FAILED, JobState.QUEUED),
        (EventType.STARTED, JobState.RUNNING),
        (EventType.COMPLETED, JobState.COMPLETED),
    ]
    progress: dict[str, int] = {}
    events: list[Event] = []
    for n, (job_no, queue, task) in enumerate(steps):
        job_id = f"j{job_no}-{queue}"
        step = progress.get(job_id, 0)
        if step == len(lifecycle):
            continue
        progress[job_id] = step + 1
        etype, state = lifecycle[step]
        job = running(
            id=job_id,
            queue=queue,
            task=f"t{job_no % 3 if task else 0}",
            state=state,
            start_time=None if step == 0 else NOW - (n + 1) * 1000,
        )
        events.append(Event(n + 1, etype, job, NOW + n))

    async def recount() -> tuple[int, Counts]:
        return 0, {}

    metrics = Metrics()
    tap = JobMetrics(metrics, recount)
    await tap.start()
    size = -(-len(events) // chunks)
    for start in range(0, len(events), size):
        tap.on_events(events[start : start + size])
        tap.count_local(events[start : start + size])
    sample = metrics.registry.get_sample_value
    gauge: dict[tuple[str, str], int] = {}
    for (state, queue, _), n in tap.counts.items():
        gauge[state.value, queue] = gauge.get((state.value, queue), 0) + n
    for state in (JobState.QUEUED, JobState.RUNNING):
        for queue in ("a", "b"):
            labels = {"state": state.value, "queue": queue}
            assert (sample("jobwheel_jobs", labels) or 0) == gauge.get((state.value, queue), 0)
    for etype, name in ((EventType.ENQUEUED, "enqueued"), (EventType.STARTED, "started")):
        for queue in ("a", "b"):
            for task in ("t0", "t1", "t2"):
                labels = {"queue": queue, "task": task}
                expected = sum(
                    e.type is etype and e.job.queue == queue and e.job.task == task for e in events
                )
                got = sample(f"jobwheel_jobs_{name}_total", labels) or 0
                assert got == expected
    durations = sum(e.type in (EventType.ATTEMPT_FAILED, EventType.COMPLETED) for e in events)
    got = sum(
        sample("jobwheel_attempt_duration_seconds_count", {"queue": q, "task": t, "outcome": o})
        or 0
        for q in ("a", "b")
        for t in ("t0", "t1", "t2")
        for o in ("succeeded", "failed")
    )
    assert got == durations
