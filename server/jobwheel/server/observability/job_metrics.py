"""Job metrics from the event stream.

Counters and histograms follow the events this process commits (so summing over replicas
gives totals). The jobs-by-state gauge follows every event on the bus (all replicas'), starting
from one count: an event carries the job as it is after the change, and its type (with the
other events of the same change) says which state it left. The few changes whose previous state
the events do not tell (operator cancel, pause, reschedule, delete; a late recurring job whose
schedule ended) mark the gauge stale, and one recount (a GROUP BY over an index) follows, at
most every `recount_every` seconds; events that arrive during a recount are applied after it.
Terminal states are not in the gauge: their totals are the counters, and retention prunes
them without events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from jobwheel.server.model import SECOND, Event, EventType, Job, JobState
from jobwheel.server.observability.metrics import Metrics

log = logging.getLogger(__name__)
E = EventType
S = JobState
Counts = dict[tuple[JobState, str, str], int]  # (state, queue, task) -> jobs
# prev-state is unknown: the gauge needs a recount
UNKNOWN = object()


def changes(events: Sequence[Event]) -> list[list[Event]]:
    """Events grouped by change: consecutive events of one job in one transaction."""
    groups: list[list[Event]] = []
    for event in events:
        last = groups[-1][-1] if groups else None
        if last is not None and last.job.id == event.job.id and last.time == event.time:
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


def previous_state(group: Sequence[Event]) -> JobState | object | None:
    """The state the job was in before the change: None for a new job (or a terminal one,
    which the gauge does not count), UNKNOWN when the events do not tell."""
    types = [e.type for e in group]
    first = types[0]
    job = group[-1].job
    if first is E.ENQUEUED or (first is E.RETRY_SCHEDULED and len(types) == 1):
        return None  # new, or a finished job retried by an operator
    if first is E.STARTED:
        return S.QUEUED
    if first in (E.ATTEMPT_FAILED, E.ATTEMPT_LOST, E.FAILED):
        return S.RUNNING
    if first is E.COMPLETED:
        # a late recurring job whose schedule ended completes from SCHEDULED, alone
        return UNKNOWN if job.recurring and len(types) == 1 else S.RUNNING
    if first is E.MISFIRE_SKIPPED:
        return S.SCHEDULED
    if first is E.QUEUED:  # promotion: retries wait in RETRYING, first runs in SCHEDULED
        # (read from the promotion's own snapshot: a fire's claim may follow in the group)
        return S.RETRYING if group[0].job.attempt > 0 else S.SCHEDULED
    if first is E.RESUMED:
        return S.PAUSED
    if first is E.PROGRESS:
        return S.RUNNING
    return UNKNOWN


def _tracked(state: JobState | None) -> bool:
    return state is not None and not state.terminal


class JobMetrics:
    def __init__(
        self,
        metrics: Metrics,
        recount: Callable[[], Awaitable[tuple[int, Counts]]],
        recount_every: float = 5.0,
    ) -> None:
        self.m = metrics
        self._recount = recount
        self.recount_every = recount_every
        self.counts: Counts = {}
        self._revision = 0  # events up to here are in `counts`
        self._pending: list[list[Event]] | None = None  # during a recount
        self._recounting: asyncio.Task[None] | None = None
        self._stale = False
        self.recounts = 0

    async def start(self) -> None:
        await self._count()

    async def _count(self) -> None:
        self._pending = []
        try:
            revision, counts = await self._recount()
        except BaseException:
            self._pending = None
            raise
        self.recounts += 1
        pending, self._pending = self._pending, None
        self.counts = dict(counts)
        self._revision = revision
        published_below: Counter[tuple[str, str]] = Counter()  # the gauge, whole
        for group in pending:
            self._apply(group, published_below)
        self._publish_all()

    def _publish_all(self) -> None:
        self.m.jobs.clear()
        by_label: dict[tuple[str, str], int] = {}
        for (state, queue, _), n in self.counts.items():
            key = (state.value, self.m.queue_label(queue))
            by_label[key] = by_label.get(key, 0) + n
        for (state_value, queue_label), n in by_label.items():
            self.m.jobs.labels(state_value, queue_label).set(n)

    # -- every event on the bus (all replicas) ----------------------------------------

    def on_events(self, events: Sequence[Event]) -> None:
        """A batch tap of the bus: the events of whole transactions, in revision order."""
        # the gauge's changes summed per series, then applied once each: a dispatch cycle
        # moves hundreds of jobs between the same few series (every series touched is
        # applied, one netting to 0 too: it is exported as it would be change by change)
        deltas: Counter[tuple[str, str]] = Counter()
        for group in changes(events):
            if self._pending is not None:
                self._pending.append(group)
            else:
                self._apply(group, deltas)
        for labels, n in deltas.items():
            self.m.jobs.labels(*labels).inc(n)

    def _apply(self, group: Sequence[Event], deltas: Counter[tuple[str, str]]) -> None:
        """Counts the change `group` makes, its gauge changes added to `deltas` by series
        (state, queue label; the label taken in event order, as the label cap counts)."""
        if group[-1].revision <= self._revision:
            return  # already in the count
        self._revision = group[-1].revision
        prev = previous_state(group)
        if prev is UNKNOWN:
            self._schedule_recount()
            return
        job = group[-1].job
        new = None if group[-1].type is E.DELETED else job.state
        if prev == new:
            return
        if isinstance(prev, JobState) and _tracked(prev):
            self._add(prev, job.queue, job.task, -1)
            deltas[prev.value, self.m.queue_label(job.queue)] -= 1
        if _tracked(new):
            assert new is not None
            self._add(new, job.queue, job.task, 1)
            deltas[new.value, self.m.queue_label(job.queue)] += 1

    def _add(self, state: JobState, queue: str, task: str, n: int) -> None:
        key = (state, queue, task)
        value = self.counts.get(key, 0) + n
        if value:
            self.counts[key] = value
        else:
            self.counts.pop(key, None)

    def _schedule_recount(self) -> None:
        self._stale = True
        if self._recounting is None or self._recounting.done():
            self._recounting = asyncio.get_running_loop().create_task(self._recount_while_stale())

    async def _recount_while_stale(self) -> None:
        # a change the events do not explain, even one that arrives during a recount, makes
        # the gauge stale again: count until one recount ends with nothing unexplained
        while self._stale:
            await asyncio.sleep(self.recount_every)
            self._stale = False
            try:
                await self._count()
            except Exception:
                log.exception("recounting jobs for metrics failed; retrying later")
                self._stale = True

    async def close(self) -> None:
        if self._recounting is not None:
            self._recounting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recounting

    def publish_unserved(self, unserved: Callable[[str, str], bool]) -> None:
        """Sets the without-worker gauge: QUEUED jobs of (queue, task) nobody runs."""
        by_label: dict[tuple[str, str], int] = {}
        for (state, queue, task), n in self.counts.items():
            if state is S.QUEUED and unserved(queue, task):
                key = self.m.job_labels(queue, task)
                by_label[key] = by_label.get(key, 0) + n
        self.m.without_worker.clear()
        for labels, n in by_label.items():
            self.m.without_worker.labels(*labels).set(n)

    # -- events this process committed -----------------------------------------------

    def count_local(self, events: Sequence[Event]) -> None:
        m = self.m
        # counts summed per series and each histogram series looked up once per call: a
        # transaction's events share a few (labels() costs more than the change itself)
        counted: Counter[tuple[str, str, str]] = Counter()
        late: dict[str, Any] = {}
        took: dict[tuple[str, str, str], Any] = {}
        for group in changes(events):
            job = group[-1].job
            queue, task = m.job_labels(job.queue, job.task)
            types = [e.type for e in group]
            for etype in types:
                counter = _COUNTERS.get(etype)
                if counter is not None:
                    counted[counter, queue, task] += 1
            due, start = job.next_run_time, job.start_time
            # a start, alone or right after its promotion (a fire claims in that transaction)
            if E.STARTED in types and start is not None and due is not None:
                if (series := late.get(queue)) is None:
                    series = late[queue] = m.lateness.labels(queue)
                series.observe(max(0, start - due) / SECOND)
            outcome = _attempt_outcome(types, job)
            if outcome is not None and start is not None:
                key = (queue, task, outcome)
                if (series := took.get(key)) is None:
                    series = took[key] = m.attempt_seconds.labels(*key)
                series.observe(max(0, group[-1].time - start) / SECOND)
        for (counter, queue, task), n in counted.items():
            getattr(m, counter).labels(queue, task).inc(n)


_COUNTERS = {
    E.ENQUEUED: "enqueued",
    E.STARTED: "started",
    E.COMPLETED: "completed",
    E.FAILED: "failed",
    E.RETRY_SCHEDULED: "retried",
    E.CANCELLED: "cancelled",
    E.ATTEMPT_LOST: "lost",
}


def _attempt_outcome(types: list[EventType], job: Job) -> str | None:
    """How the attempt ended, if this change ended one."""
    if E.ATTEMPT_LOST in types:
        return "lost"
    if types[0] in (E.ATTEMPT_FAILED, E.FAILED):
        return "failed"
    if types[0] is E.COMPLETED and not (job.recurring and len(types) == 1):
        return "succeeded"
    return None
