"""Queue rooms: how many jobs each queue may claim in a dispatch cycle, and which queues to try.

A queue's room is its concurrency limit (`max_concurrency`, else the process's default) less
the attempts this process holds of it and the claims of cycles still in flight, with the
attempts whose end a cycle stores counted as ended. Where several cycles are in flight at once
(PostgreSQL) each claims at most a share of the limit; a queue with a rate
(`max_dispatches_per_second`) claims no more than its token bucket gives. A queue is *ready*
while it may hold jobs to claim: a wake-up named it, its last claim was full, or it had no room.

Kept apart from the dispatcher's cycles and tasks so that the arithmetic can be read and
tested on its own: no I/O and no asyncio. Time comes from `monotonic`; a queue that must wait
for its rate's tokens asks `wake_later` for a cycle after that wait. The dispatcher keeps the
per-attempt counts (`running`, `settling`) up to date itself: they change on its per-job path,
where a call each would cost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from jobwheel.server import model
from jobwheel.server.execution.ratelimit import TokenBucket

# (queue, room): a queue to claim in a cycle, and how many of its jobs at most
Claim = tuple[str, int]


class QueueRooms:
    def __init__(
        self,
        concurrency: int,
        *,
        cycles_in_flight: int,
        monotonic: Callable[[], float],
        wake_later: Callable[[float], None],
    ) -> None:
        self.concurrency = concurrency  # the limit of a queue without max_concurrency
        self.cycles_in_flight = cycles_in_flight
        self.monotonic = monotonic
        self.wake_later = wake_later
        self.settings: dict[str, model.QueueSettings] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.ready: set[str] = set()  # queues that may hold jobs to claim
        self.running: Counter[str] = Counter()  # held attempts per queue
        self.settling: Counter[str] = Counter()  # held attempts whose end is being stored
        self._in_flight: Counter[str] = Counter()  # rooms of the claims not back yet
        self._full: set[str] = set()  # queues whose last claim took all the room it had

    def set_queues(self, settings: dict[str, model.QueueSettings]) -> None:
        """Applies queue settings (pause, concurrency, rate); a changed queue not paused is
        ready (it may run more now)."""
        for name, queue in settings.items():
            if self.settings.get(name) == queue:
                continue
            self.settings[name] = queue
            rate = queue.max_dispatches_per_second
            if rate <= 0:
                self.buckets.pop(name, None)
            elif name not in self.buckets or self.buckets[name].rate != rate:
                self.buckets[name] = TokenBucket(rate, self.monotonic())
            if not queue.paused:
                self.ready.add(name)

    def claims(self, freed: Counter[str]) -> list[Claim]:
        """(queue, how many to claim) for each ready queue with room, counting the attempts
        whose end this cycle stores (`freed`, by queue) as ended. Only a ready queue may hold
        more (its last claim was full, it had no room, or a wake-up named it): a drained one
        claims nothing after each ending."""
        claims: list[Claim] = []
        # a full claim not back yet: its queue likely holds more (several cycles in flight)
        again = {q for q in self._in_flight if q in self._full}
        for queue in sorted(self.ready | again):
            room = self.room(queue, freed[queue])
            if room > 0:
                claims.append((queue, room))
        return claims

    def room(self, queue: str, freed: int = 0) -> int:
        """How many jobs of `queue` to claim now (its limit, rate, pause), with `freed` of its
        held attempts counted as ended, taking the rate's tokens; a queue with room leaves
        `ready` (a wake-up during the claim puts it back), one without stays there until a
        slot frees or tokens come."""
        settings = self.settings.get(queue)
        if settings is not None and settings.paused:
            self.ready.discard(queue)  # resuming it wakes it again
            return 0
        limit = (settings and settings.max_concurrency) or self.concurrency
        # cycles in flight: their endings free room as their claims take it
        taken = self.running[queue] - self.settling[queue] + self._in_flight[queue]
        room = limit - taken + freed
        if self.cycles_in_flight > 1:
            # a share of the limit per cycle: while one is in flight, the jobs another
            # started end, and their endings make the next cycle (short jobs would all end
            # before a claim of the whole limit is back, leaving nothing to overlap)
            room = min(room, -(-limit // self.cycles_in_flight))
        bucket = self.buckets.get(queue)
        if bucket is not None and room > 0:
            allowed = bucket.take(room, self.monotonic())
            if allowed < room:
                self.wake_later(bucket.wait(self.monotonic()))
            room = allowed
        if room > 0:
            self.ready.discard(queue)
        else:
            self.ready.add(queue)
        return room

    def claimed(self, queue: str, room: int, got: int) -> None:
        """After a claim of `got` of up to `room` jobs of `queue`: unused rate tokens go back;
        a full claim leaves the queue ready (there may be more)."""
        if room <= 0:
            return
        bucket = self.buckets.get(queue)
        if bucket is not None:
            bucket.give_back(room - got)
        if got == room:
            self.ready.add(queue)
            self._full.add(queue)
        else:
            self._full.discard(queue)

    def not_claimed(self, claims: Iterable[Claim]) -> None:
        """The cycle of `claims` failed (e.g. the database is unreachable): their queues are
        ready again and their tokens go back."""
        for queue, room in claims:
            self.ready.add(queue)
            # a room of 0 or less (the queue over its limit) took no tokens
            if room > 0 and (bucket := self.buckets.get(queue)) is not None:
                bucket.give_back(room)

    def sent(self, claims: Iterable[Claim]) -> None:
        """`claims` went out in a cycle beside the loop: their rooms count as taken until
        `back`."""
        for queue, room in claims:
            self._in_flight[queue] += room

    def back(self, claims: Iterable[Claim]) -> None:
        """The cycle that `sent` `claims` is done: its claimed jobs are running (or it failed),
        so their rooms are counted by `running` instead (or free)."""
        for queue, room in claims:
            self._in_flight[queue] -= room
            if self._in_flight[queue] <= 0:
                del self._in_flight[queue]
