"""The event bus behind WatchJobs.

Committed events arrive from the store (and, on PostgreSQL, from other replicas through the
log tailer) and leave in revision order: an event whose predecessors have not arrived yet
waits for them. Fan-out is indexed: a watcher of given job ids is only looked at for events
of those jobs, so an event costs nothing for watchers of other jobs. Each subscription has a
bounded buffer; a watcher that falls behind is marked overflowed and dropped by its stream,
and never slows the engine or other watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence

from jobwheel.server.clock import SYSTEM_CLOCK, Clock
from jobwheel.server.matching import matches
from jobwheel.server.model import SECOND, Event, EventType, JobFilter, Micros
from jobwheel.server.storage import DatabaseUnavailable, Store

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, flt: JobFilter, capacity: int) -> None:
        self.filter = flt
        self.capacity = capacity
        self.buffer: deque[Event] = deque()
        self.overflowed = False
        self.ready = asyncio.Event()
        # every event from this revision on is offered to the subscription
        self.start = 0

    def offer(self, event: Event) -> None:
        if self.overflowed or not matches(self.filter, event.job):
            return
        if len(self.buffer) >= self.capacity:
            self.overflowed = True
            self.buffer.clear()  # it will be dropped: free the memory now
        else:
            self.buffer.append(event)
        self.ready.set()


class EventBus:
    def __init__(
        self,
        next_revision: int = 1,
        taps: Sequence[Callable[[Event], None]] = (),
        batch_taps: Sequence[Callable[[list[Event]], None]] = (),
    ) -> None:
        self.next_revision = next_revision  # the first revision not yet delivered
        self._waiting: dict[int, Event | None] = {}  # None: a skipped revision
        self._by_job: dict[str, set[Subscription]] = {}
        self._broad: set[Subscription] = set()
        # called with every event, in revision order (the engine reacts to changes here)
        self.taps: list[Callable[[Event], None]] = list(taps)
        # called with the events each publish delivered, in order: a transaction's events
        # arrive together (the metrics tell a change's previous state from them)
        self.batch_taps: list[Callable[[list[Event]], None]] = list(batch_taps)
        # what the taps need of other processes' events (type, job id, recurring): the log
        # tailer decodes only those (and all while watchers or batch taps look at every one);
        # None: all
        self.taps_need: Callable[[EventType, str, bool], bool] | None = None

    @property
    def head(self) -> int:
        """The newest revision delivered."""
        return self.next_revision - 1

    @property
    def subscriptions(self) -> int:
        return len(self._broad) + sum(len(s) for s in self._by_job.values())

    def subscribe(self, flt: JobFilter, capacity: int = 10_000) -> Subscription:
        sub = Subscription(flt, capacity)
        sub.start = self.next_revision
        if flt.ids:
            for job_id in flt.ids:
                self._by_job.setdefault(job_id, set()).add(sub)
        else:
            self._broad.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._broad.discard(sub)
        for job_id in sub.filter.ids:
            subs = self._by_job.get(job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_job[job_id]

    def wants(self, etype: EventType, job_id: str, recurring: bool) -> bool:
        """Whether an event of another process must be published in full now: a broad
        watcher, a watcher of the job or a batch tap sees it, or the taps need it."""
        if self._broad or self.batch_taps or job_id in self._by_job:
            return True
        return self.taps_need is None or self.taps_need(etype, job_id, recurring)

    def publish(self, events: list[Event], skipped: Sequence[int] = ()) -> None:
        """Delivers `events` in revision order, once their predecessors are in;
        `skipped`: revisions that no one `wants`, passed over without an event."""
        if not self._waiting and not skipped and _in_line(events, self.next_revision):
            # the usual case, this process's own commit: next in line, nothing waits
            delivered = events
            self.next_revision += len(events)
        else:
            delivered = self._collect(events, skipped)
        taps, by_job, broad = self.taps, self._by_job, self._broad
        for event in delivered:
            for tap in taps:
                tap(event)
            if by_job:
                for sub in by_job.get(event.job.id, ()):
                    sub.offer(event)
            for sub in broad:
                sub.offer(event)
        if delivered:
            for batch_tap in self.batch_taps:
                batch_tap(delivered)

    def _collect(self, events: list[Event], skipped: Sequence[int]) -> list[Event]:
        """Puts `events` and `skipped` among the waiting ones; takes out and returns those
        now in line, in order."""
        for event in events:
            if event.revision >= self.next_revision:
                self._waiting[event.revision] = event
        for revision in skipped:
            if revision >= self.next_revision:
                self._waiting.setdefault(revision, None)
        delivered: list[Event] = []
        while self.next_revision in self._waiting:
            waiting = self._waiting.pop(self.next_revision)
            self.next_revision += 1
            if waiting is not None:
                delivered.append(waiting)
        return delivered

    @property
    def gap(self) -> bool:
        """Events wait for an earlier revision (one committed by another replica)."""
        return bool(self._waiting)


def _in_line(events: list[Event], first: int) -> bool:
    """The revisions of `events` are `first`, `first` + 1, ... in order."""
    return all(event.revision == revision for revision, event in enumerate(events, first))


class EventRelay:
    """The store's event sink, passed to it when it opens: committed events go on to the
    receivers connected since, in order. The bus starts after the opened store's newest
    revision, so it is built after the store and connected then, before anything writes."""

    def __init__(self) -> None:
        self._receivers: list[Callable[[list[Event]], None]] = []

    def connect(self, *receivers: Callable[[list[Event]], None]) -> None:
        self._receivers.extend(receivers)

    def __call__(self, events: list[Event]) -> None:
        for receiver in self._receivers:
            receiver(events)


class LogTailer:
    """Fills the bus from the event log.

    On PostgreSQL it reads every revision the bus has not seen when another replica sharing
    the database tells of its commit (LISTEN/NOTIFY). Otherwise it only repairs: when an
    event has waited a tick (`every`) for a predecessor, or the bus is still behind the log's
    head of the previous check (`check_every`; a notification was missed, or a writer was
    cancelled between its commit and handing over its events), it reads the missing ones.
    """

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        always: bool,
        every: Micros = SECOND // 20,
        check_every: Micros = SECOND,
        clock: Clock = SYSTEM_CLOCK,
        on_settings: Callable[[], None] | None = None,
    ) -> None:
        """`on_settings` is called when another replica changed queue settings or event
        subscriptions (PostgreSQL)."""
        self.clock = clock
        self.store = store
        self.bus = bus
        self.always = always
        self.on_settings = on_settings
        self.every = every
        self.check_every = check_every

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except DatabaseUnavailable as exc:
                # the listening connection went with the outage: take a new one
                log.warning("following the event log paused: %s", exc)
            except Exception:
                log.exception("following the event log failed; retrying")
            await self.clock.sleep(self.check_every / SECOND)

    async def _follow(self) -> None:
        notified = asyncio.Event()
        lost = asyncio.Event()

        def on_lost() -> None:
            lost.set()
            notified.set()

        # this process hands its own events to the bus itself: reading them back from the
        # log would decode every event twice (a lost hand-over is found by the slow poll)
        async with self.store.listening(
            notified.set, others_only=True, on_settings=self.on_settings, on_lost=on_lost
        ) as listening:
            if listening and self.on_settings is not None:
                self.on_settings()  # what changed before the LISTEN took effect was not told
            next_check = 0.0
            gap_at = 0  # the revision the bus waited for at the previous tick (0: none)
            log_head = 0  # the log's head at the previous check
            told = True  # another process committed events (at first: whatever came before)
            while True:
                try:
                    behind = self.always and told
                    if not behind:
                        # This process's writers hand their events over just after their
                        # commit: a gap, or a log ahead of the bus, is repaired only once it
                        # has lasted a tick (a gap) or a check (the log's head), so the events
                        # about to arrive anyway are not read back and decoded (a batch
                        # enqueue's thousand, when a slow poll fell between its commit and
                        # its hand-over).
                        waiting = self.bus.next_revision if self.bus.gap else 0
                        behind = waiting != 0 and waiting == gap_at
                        gap_at = waiting
                    if not behind and self.clock.monotonic() >= next_check:
                        next_check = self.clock.monotonic() + self.check_every / SECOND
                        behind = self.bus.head < log_head
                        log_head = await self.store.head_revision()
                    while behind:
                        events, skipped = await self.store.read_events_kept(
                            self.bus.head, 1000, self.bus.wants
                        )
                        self.bus.publish(events, skipped)  # at once: as `wants` said
                        behind = len(events) + len(skipped) == 1000
                except DatabaseUnavailable:
                    if listening:
                        raise
                    await self.clock.sleep(self.check_every / SECOND)
                except Exception:
                    log.exception("reading the event log failed; retrying")
                if listening:  # woken by NOTIFY; a slow poll in case one was missed, a
                    # tick while the bus waits for a revision (as above)
                    wait = self.every if self.bus.gap else self.check_every
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait / SECOND):
                            await notified.wait()
                    if lost.is_set():  # nothing more would be told: listen again
                        raise DatabaseUnavailable("the connection listening for commits closed")
                    told = notified.is_set()
                    notified.clear()
                else:
                    await self.clock.sleep(self.every / SECOND)
