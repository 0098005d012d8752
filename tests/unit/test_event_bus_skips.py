"""The event bus passes over revisions no one wants (other replicas' events the tailer did not
decode) and still delivers the rest in revision order, with no gap left waiting."""

from __future__ import annotations

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
