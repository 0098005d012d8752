"""WatchJobs: an optional snapshot, a replay from the event log, then live events.

The stream subscribes to the bus first, then reads the snapshot (at revision R) or replays
the log after `since_revision`, then hands over to the live buffer, delivering only revisions
after the last one sent: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator

from jobwheel.server import model
from jobwheel.server.api.convert import EVENT_TYPE_TO_PROTO, job_to_proto, timestamp
from jobwheel.server.api.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
)
from jobwheel.server.clock import Clock
from jobwheel.server.events import EventBus, Subscription
from jobwheel.server.matching import matches
from jobwheel.server.storage import Store
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

REPLAY_PAGE = 1000
SNAPSHOT_LIMIT = 50_000


class ProtoCache:
    """Each event is converted once, however many watchers receive it."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._items: OrderedDict[int, pb.WatchJobsResponse] = OrderedDict()

    def get(self, event: model.Event) -> pb.WatchJobsResponse:
        found = self._items.get(event.revision)
        if found is None:
            found = pb.WatchJobsResponse(
                event=job_pb2.JobEvent(
                    revision=event.revision,
                    type=EVENT_TYPE_TO_PROTO[event.type],
                    job=job_to_proto(event.job),
                    event_time=timestamp(event.time),
                )
            )
            self._items[event.revision] = found
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return found


class Watcher:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        clock: Clock,
        *,
        heartbeat: float = 15.0,
        buffer: int = 10_000,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.heartbeat = heartbeat
        self.buffer = buffer
        self.protos = ProtoCache()
        self.on_sent: Callable[[int], None] | None = None  # told how many events went out
        self.closed = False
        self._open: set[Subscription] = set()

    def close(self) -> None:
        """Ends every open stream now with UNAVAILABLE (the server is stopping): a watcher
        reconnects elsewhere instead of holding the shutdown's grace period."""
        self.closed = True
        for sub in self._open:
            sub.ready.set()

    async def check(self, since: int) -> None:
        if since < 0:
            raise InvalidArgument([FieldViolation("since_revision", "must not be negative")])
        if since == 0:
            return
        head = self.bus.head
        if since > head:
            raise OutOfRange(
                f"revision {since} is ahead of the newest revision {head}",
                "REVISION_AHEAD",
                newest_revision=str(head),
            )
        oldest = await self.store.oldest_revision()
        if oldest is not None and since < oldest - 1:
            raise OutOfRange(
                f"revision {since} is no longer kept; the oldest available is {oldest}: "
                "take a fresh snapshot (include_snapshot) and watch from its revision",
                "REVISION_COMPACTED",
                oldest_revision=str(oldest),
            )

    async def stream(
        self, flt: model.JobFilter, include_snapshot: bool, since: int, max_batch: int = 1
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        await self.check(since)
        self._stop_if_closed()
        sub = self.bus.subscribe(flt, self.buffer)
        self._open.add(sub)
        try:
            last = since if since else sub.start - 1
            if include_snapshot:
                # read it all before sending: a client that does not read must not hold a
                # database transaction (and a pooled connection) open
                snapshot: list[model.Job] = []
                async with self.store.snapshot(flt) as (revision, chunks):
                    async for jobs in chunks:
                        snapshot += jobs
                        if len(snapshot) > SNAPSHOT_LIMIT:
                            raise FailedPrecondition(
                                f"the snapshot would hold more than {SNAPSHOT_LIMIT} jobs: "
                                "narrow the filter, or watch without a snapshot",
                                "SNAPSHOT_TOO_LARGE",
                                limit=str(SNAPSHOT_LIMIT),
                            )
                for job in snapshot:
                    yield self._snapshot_entry(job, revision)
                del snapshot
                last = revision
                yield pb.WatchJobsResponse(snapshot_end=pb.SnapshotEnd(revision=revision))
            # the log holds what happened between `last` and the subscription
            while last < sub.start - 1:
                page = await self.store.read_events(last, REPLAY_PAGE)
                wanted = []
                for event in page:
                    if event.revision >= sub.start:
                        break
                    last = event.revision
                    if matches(sub.filter, event.job):
                        wanted.append(event)
                for response in self._pack(wanted, max_batch):
                    yield response
                if len(page) < REPLAY_PAGE:
                    break
            async for response in self._live(sub, last, max_batch):
                yield response
        finally:
            self._open.discard(sub)
            self.bus.unsubscribe(sub)

    def _stop_if_closed(self) -> None:
        if self.closed:
            raise Unavailable("the server is stopping; reconnect and resume with since_revision")

    def _pack(self, events: list[model.Event], max_batch: int) -> Iterator[pb.WatchJobsResponse]:
        """One message per event, or up to `max_batch` events per message when asked."""
        if self.on_sent is not None:
            self.on_sent(len(events))
        if max_batch <= 1:
            yield from (self.protos.get(e) for e in events)
            return
        for start in range(0, len(events), max_batch):
            chunk = events[start : start + max_batch]
            if len(chunk) == 1:
                yield self.protos.get(chunk[0])
            else:
                batch = pb.EventBatch(events=[self.protos.get(e).event for e in chunk])
                yield pb.WatchJobsResponse(batch=batch)

    async def _live(
        self, sub: Subscription, last: int, max_batch: int = 1
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        while True:
            self._stop_if_closed()
            if sub.overflowed:
                raise ResourceExhausted(
                    f"watcher fell more than {sub.capacity} events behind; resume with "
                    f"since_revision={last}",
                    "WATCHER_TOO_SLOW",
                    last_revision=str(last),
                )
            while sub.buffer:
                waiting: list[model.Event] = []
                while sub.buffer and len(waiting) < max(1, max_batch):
                    event = sub.buffer.popleft()
                    if event.revision > last:
                        last = event.revision
                        waiting.append(event)
                for response in self._pack(waiting, max_batch):
                    yield response
            sub.ready.clear()
            if sub.buffer or sub.overflowed or self.closed:
                continue
            woke = False
            # asyncio.timeout, not wait_for: no task per wake-up on this hot path
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat):
                    await sub.ready.wait()
                    woke = True
            if not woke:
                yield pb.WatchJobsResponse(
                    heartbeat=pb.WatchHeartbeat(
                        revision=self.bus.head, time=timestamp(self.clock.now())
                    )
                )

    @staticmethod
    def _snapshot_entry(job: model.Job, revision: int) -> pb.WatchJobsResponse:
        return pb.WatchJobsResponse(
            event=job_pb2.JobEvent(
                revision=revision,
                type=job_pb2.JOB_EVENT_TYPE_SNAPSHOT,
                job=job_to_proto(job),
                event_time=timestamp(job.update_time),
            )
        )
