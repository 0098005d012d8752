"""The event bus passes over revisions no one wants (other replicas' events the tailer did not
decode) and still delivers the rest in revision order, with no gap left waiting."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.events import EventBus
from jobwheel.server.model import Event, EventType, JobFilter
from jobwheel.server.storage.convert import job_from_new

from tests.integration.storage.factories import new_job


def _event(revision: int, job_id: str = "j") -> Event:
    job = job_from_new(new_job(id=job_id), seq=revision)
    return Event(revision=revision, type=EventType.STARTED, job=job, time=0)


def test_skipped_revisions_close_the_gap_and_deliver_nothing() -> None:
    seen: list[int] = []
    bus = EventBus(1, taps=[lambda e: seen.append(e.revision)])
    bus.publish([_event(3)])  # waits for 1 and 2
    assert seen == [] and bus.gap
    bus.publish([_event(1)], skipped=[2])
    assert seen == [1, 3] and not bus.gap and bus.head == 3
    bus.publish([_event(2), _event(3)], skipped=[1])  # late duplicates change nothing
    assert seen == [1, 3] and bus.head == 3


def test_wants_every_event_while_someone_looks_at_every_event() -> None:
    bus = EventBus(1)
    bus.taps_need = lambda etype, job_id, recurring: etype is EventType.QUEUED
    assert bus.wants(EventType.QUEUED, "a", False)
    assert not bus.wants(EventType.STARTED, "a", False)
    per_job = bus.subscribe(JobFilter(ids=("a",)))
    assert bus.wants(EventType.STARTED, "a", False)  # a watcher of the job
    assert not bus.wants(EventType.STARTED, "b", False)
    bus.unsubscribe(per_job)
    broad = bus.subscribe(JobFilter())
    assert bus.wants(EventType.STARTED, "b", False)  # a watcher of every job
    bus.unsubscribe(broad)
    bus.batch_taps.append(lambda events: None)
    assert bus.wants(EventType.STARTED, "b", False)  # a batch tap (job metrics)
    assert EventBus(1).wants(EventType.STARTED, "b", False)  # no one said: all


@st.composite
def _publishing(draw: st.DrawFn) -> tuple[list[int], list[bool], list[int]]:
    """Revisions 1..n but a few, in order (the usual commit) or shuffled; which of them are
    skipped; where the calls cut the list."""
    n = draw(st.integers(1, 20))
    absent = draw(st.sets(st.integers(1, n), max_size=3))
    revisions = [r for r in draw(st.permutations(range(1, n + 1))) if r not in absent]
    if draw(st.booleans()):
        revisions.sort()
    is_skipped = draw(st.lists(st.booleans(), min_size=len(revisions), max_size=len(revisions)))
    cuts = draw(st.lists(st.integers(0, len(revisions)), max_size=6))
    return revisions, is_skipped, cuts


@given(_publishing())
def test_every_publish_delivers_the_revisions_in_line_once_in_order(
    plan: tuple[list[int], list[bool], list[int]],
) -> None:
    """Revisions published in any order, in any calls, some skipped, some repeated: delivered
    (to taps, batch taps and a watcher) is exactly the published ones up to the first still
    missing, in order, each once; whether or not a call takes the in-line shortcut."""
    revisions, is_skipped, cuts = plan
    seen: list[int] = []
    batches: list[list[int]] = []
    bus = EventBus(1, taps=[lambda e: seen.append(e.revision)])
    bus.batch_taps.append(lambda events: batches.append([e.revision for e in events]))
    watcher = bus.subscribe(JobFilter())
    bounds = sorted({0, len(revisions), *cuts})
    for low, high in itertools.pairwise(bounds):
        part = list(range(low, high))
        events = [_event(revisions[i]) for i in part if not is_skipped[i]]
        skipped = [revisions[i] for i in part if is_skipped[i]]
        bus.publish(events, skipped=skipped)
        bus.publish(events[:1])  # a late duplicate changes nothing
    published = set(revisions)
    head = 0
    while head + 1 in published:
        head += 1
    expected = [r for r in range(1, head + 1) if not is_skipped[revisions.index(r)]]
    assert seen == expected
    assert [r for batch in batches for r in batch] == expected
    assert [e.revision for e in watcher.buffer] == expected
    assert bus.head == head and bus.gap == (len(published) > head)
