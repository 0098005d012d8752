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
from jobwheel.server.api import reply_size
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
from jobwheel.server.signals import Signal
from jobwheel.server.storage import Store
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

REPLAY_PAGE = 1000
SNAPSHOT_LIMIT = 50_000
SNAPSHOT_MAX_BYTES = 128 << 20
SNAPSHOT_CHUNK = 64  # rows read at a time: 64 big jobs are already many megabytes
# What all snapshots read and not yet sent may hold together: a few of the largest at once,
# however many streams ask (a reader that stops reading keeps its part until it goes).
SNAPSHOTS_MAX_BYTES = 512 << 20


class ProtoCache:
    """Each event is converted once, however many watchers receive it. Holds at most `size`
    events and `max_bytes` of encoded events (events of big jobs are big)."""

    def __init__(self, size: int = 20_000, max_bytes: int = 64 << 20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[int, tuple[pb.WatchJobsResponse, int]] = OrderedDict()

    def get(self, event: model.Event) -> pb.WatchJobsResponse:
        cached = self._items.get(event.revision)
        if cached is not None:
            return cached[0]
        found = pb.WatchJobsResponse(
            event=job_pb2.JobEvent(
                revision=event.revision,
                type=EVENT_TYPE_TO_PROTO[event.type],
                job=job_to_proto(event.job),
                event_time=timestamp(event.time),
            )
        )
        size = found.ByteSize()
        self._items[event.revision] = (found, size)
        self.bytes += size
        while len(self._items) > self.size or self.bytes > self.max_bytes:
            _, (_, dropped) = self._items.popitem(last=False)
            self.bytes -= dropped
        return found


class Watcher:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        clock: Clock,
        *,
        heartbeat: float,
        buffer: int,
        on_sent: Callable[[int], None] | None = None,
        snapshots_max_bytes: int = SNAPSHOTS_MAX_BYTES,
    ) -> None:
        """WatchJobs streams: a heartbeat after `heartbeat` idle seconds, at most `buffer`
        events waiting per stream (defaults: Settings.watch_heartbeat, watch_buffer);
        `on_sent(n)` is told how many events each send carried. Snapshots read and not yet
        sent hold at most `snapshots_max_bytes` (encoded) across all streams."""
        self.snapshots_max_bytes = snapshots_max_bytes
        self.snapshot_bytes = 0  # held now, across streams
        self.store = store
        self.bus = bus
        self.clock = clock
        self.heartbeat = heartbeat
        self.buffer = buffer
        self.protos = ProtoCache()
        self.on_sent = on_sent  # told how many events went out
        self.closed = False
        self._open: set[Subscription] = set()
        # fired when a stream has subscribed to the bus (events from then on reach it)
        self.subscribed = Signal()

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
            # another replica may have appended it, and this one not heard of it yet
            head = max(head, await self.store.head_revision())
        if since > head:
            raise OutOfRange(
                f"revision {since} is ahead of the newest revision {head}",
                "REVISION_AHEAD",
                newest_revision=str(head),
            )
        oldest = await self.store.oldest_revision()
        if oldest is not None and since < oldest - 1:
            raise _compacted(since, oldest)

    async def stream(
        self, flt: model.JobFilter, include_snapshot: bool, since: int, max_batch: int = 1
    ) -> AsyncIterator[pb.WatchJobsResponse]:
        await self.check(since)
        self._stop_if_closed()
        sub = self.bus.subscribe(flt, self.buffer)
        self._open.add(sub)
        self.subscribed.fire()
        try:
            last = since if since else sub.start - 1
            if include_snapshot:
                held = Held(self)
                try:
                    snapshot, revision = await self._read_snapshot(flt, held)
                    for entry in snapshot:
                        self._stop_if_closed()
                        yield entry
                        held.release(entry.ByteSize())
                finally:
                    held.release_all()
                del snapshot
                last = revision
                yield pb.WatchJobsResponse(snapshot_end=pb.SnapshotEnd(revision=revision))
            # the log holds what happened between `last` and the subscription
            while last < sub.start - 1:
                self._stop_if_closed()
                page = await self.store.read_events(last, REPLAY_PAGE)
                if page and page[0].revision != last + 1:  # pruned since: never skip silently
                    raise _compacted(last, page[0].revision)
                wanted = []
                for event in page:
                    if event.revision >= sub.start:
                        break
                    last = event.revision
                    if matches(sub.filter, event.job):
                        wanted.append(event)
                for response in self._pack(wanted, max_batch):
                    self._stop_if_closed()
                    yield response
                if len(page) < REPLAY_PAGE:
                    break
            async for response in self._live(sub, last, max_batch):
                yield response
        finally:
            self._open.discard(sub)
            self.bus.unsubscribe(sub)

    async def _read_snapshot(
        self, flt: model.JobFilter, held: Held
    ) -> tuple[list[pb.WatchJobsResponse], int]:
        """The matching jobs as messages, and the revision they are as of. Read whole before
        sending: a client that does not read must not hold a database transaction (and a
        pooled connection) open. Kept as messages, the compact form, and bounded in count and
        bytes, per stream and across streams (`held` counts them)."""
        snapshot: list[pb.WatchJobsResponse] = []
        async with self.store.snapshot(flt, SNAPSHOT_CHUNK) as (revision, chunks):
            async for jobs in chunks:
                # converting big documents takes a while: off the event loop
                entries = await asyncio.to_thread(_snapshot_entries, jobs, revision)
                held.take(sum(entry.ByteSize() for entry in entries))
                snapshot += entries
                if len(snapshot) > SNAPSHOT_LIMIT or held.bytes > SNAPSHOT_MAX_BYTES:
                    raise FailedPrecondition(
                        f"the snapshot would hold more than {SNAPSHOT_LIMIT} jobs or "
                        f"{SNAPSHOT_MAX_BYTES} bytes: narrow the filter, or watch "
                        "without a snapshot",
                        "SNAPSHOT_TOO_LARGE",
                        limit=str(SNAPSHOT_LIMIT),
                        max_bytes=str(SNAPSHOT_MAX_BYTES),
                    )
                if self.snapshot_bytes > self.snapshots_max_bytes:
                    raise ResourceExhausted(
                        "snapshots being sent to other watchers hold the server's "
                        f"{self.snapshots_max_bytes} bytes for them: retry with backoff, or "
                        "watch without a snapshot",
                        "SNAPSHOTS_BUSY",
                        max_bytes=str(self.snapshots_max_bytes),
                    )
        return snapshot, revision

    def _stop_if_closed(self) -> None:
        if self.closed:
            raise Unavailable("the server is stopping; reconnect and resume with since_revision")

    def _pack(self, events: list[model.Event], max_batch: int) -> Iterator[pb.WatchJobsResponse]:
        """One message per event, or up to `max_batch` events per message when asked; a batch
        also ends before it would pass the 4 MiB reply size."""
        if self.on_sent is not None:
            self.on_sent(len(events))
        if max_batch <= 1:
            yield from (self.protos.get(e) for e in events)
            return
        chunk: list[job_pb2.JobEvent] = []
        budget = reply_size.Budget()
        for event in events:
            message = self.protos.get(event).event
            # one event always fits: only a non-empty batch can be full
            if len(chunk) == max_batch or not budget.take(message):
                yield _batch(chunk)
                chunk, budget = [], reply_size.Budget()
                budget.take(message)
            chunk.append(message)
        if chunk:
            yield _batch(chunk)

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


class Held:
    """One stream's snapshot bytes, counted in its Watcher's total until sent or dropped."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.bytes = 0

    def take(self, n: int) -> None:
        self.bytes += n
        self.watcher.snapshot_bytes += n

    def release(self, n: int) -> None:
        n = min(n, self.bytes)
        self.bytes -= n
        self.watcher.snapshot_bytes -= n

    def release_all(self) -> None:
        self.release(self.bytes)


def _batch(events: list[job_pb2.JobEvent]) -> pb.WatchJobsResponse:
    if len(events) == 1:
        return pb.WatchJobsResponse(event=events[0])
    return pb.WatchJobsResponse(batch=pb.EventBatch(events=events))


def _snapshot_entries(jobs: list[model.Job], revision: int) -> list[pb.WatchJobsResponse]:
    return [
        pb.WatchJobsResponse(
            event=job_pb2.JobEvent(
                revision=revision,
                type=job_pb2.JOB_EVENT_TYPE_SNAPSHOT,
                job=job_to_proto(job),
                event_time=timestamp(job.update_time),
            )
        )
        for job in jobs
    ]


def _compacted(since: int, oldest: int) -> OutOfRange:
    return OutOfRange(
        f"revision {since} is no longer kept; the oldest available is {oldest}: "
        "take a fresh snapshot (include_snapshot) and watch from its revision",
        "REVISION_COMPACTED",
        oldest_revision=str(oldest),
    )
