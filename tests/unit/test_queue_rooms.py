"""QueueRooms without a server: the room arithmetic against an oracle, and the dispatcher's
use of it simulated (cycles in flight, endings, failures, pauses) against what must hold: a
queue never executes more than its limit, and no queue with jobs left is forgotten."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from jobwheel.server import model
from jobwheel.server.execution.queue_rooms import Claim, QueueRooms

DEFAULT = 8


def rooms_of(cycles: int, now: list[float] | None = None) -> tuple[QueueRooms, list[float]]:
    clock = now if now is not None else [0.0]
    waits: list[float] = []
    rooms = QueueRooms(
        DEFAULT, cycles_in_flight=cycles, monotonic=lambda: clock[0], wake_later=waits.append
    )
    return rooms, waits


@given(
    limit=st.one_of(st.none(), st.integers(1, 50)),
    running=st.integers(0, 60),
    data=st.data(),
    cycles=st.sampled_from([1, 2, 3]),
)
def test_room_is_the_limit_less_what_is_taken(
    limit: int | None, running: int, data: st.DataObject, cycles: int
) -> None:
    settling = data.draw(st.integers(0, running))
    freed = data.draw(st.integers(0, running - settling))
    in_flight = data.draw(st.integers(0, 60))
    rooms, waits = rooms_of(cycles)
    rooms.set_queues({"q": model.QueueSettings("q", max_concurrency=limit)})
    rooms.running["q"], rooms.settling["q"] = running, settling
    rooms.sent([("q", in_flight)])

    room = rooms.room("q", freed)

    cap = limit or DEFAULT
    expected = cap - (running - settling + in_flight) + freed
    if cycles > 1:
        expected = min(expected, -(-cap // cycles))  # a share of the limit per cycle
    assert room == expected
    assert ("q" in rooms.ready) == (room <= 0)  # without room it waits, ready
    assert waits == []
    rooms.back([("q", in_flight)])
    assert rooms.room("q", freed) == min(
        cap - running + settling + freed, -(-cap // cycles) if cycles > 1 else cap
    )


def test_a_paused_queue_has_no_room_until_resumed() -> None:
    rooms, _ = rooms_of(1)
    rooms.ready.add("q")
    rooms.set_queues({"q": model.QueueSettings("q", paused=True)})
    assert rooms.claims(Counter()) == [] and "q" not in rooms.ready
    rooms.set_queues({"q": model.QueueSettings("q", paused=True)})  # unchanged: nothing
    assert "q" not in rooms.ready
    rooms.set_queues({"q": model.QueueSettings("q")})
    assert "q" in rooms.ready and rooms.claims(Counter()) == [("q", DEFAULT)]


def test_a_full_claim_leaves_the_queue_ready_and_a_short_one_does_not() -> None:
    rooms, _ = rooms_of(1)
    rooms.ready |= {"a", "b"}
    assert rooms.claims(Counter()) == [("a", DEFAULT), ("b", DEFAULT)]
    assert rooms.ready == set()  # a wake-up during the claim would put them back
    rooms.claimed("a", DEFAULT, DEFAULT)
    rooms.claimed("b", DEFAULT, 3)
    assert rooms.ready == {"a"}


def test_a_full_claim_in_flight_claims_again_before_it_is_back() -> None:
    rooms, _ = rooms_of(2)
    half = DEFAULT // 2
    rooms.ready.add("q")
    for full in (True, False):
        [claim] = rooms.claims(Counter())
        assert claim == ("q", half)  # a share of the limit per cycle
        rooms.sent([claim])
        rooms.claimed("q", half, half if full else half - 1)  # the first cycle is back
        rooms.running["q"] += claim[1]
        rooms.back([claim])
        assert ("q" in rooms.ready) == full
        if not full:
            break
        [claim] = rooms.claims(Counter())  # a second cycle goes out
        rooms.sent([claim])
        assert "q" not in rooms.ready
        # the first cycle's jobs end: the queue is claimed again beside the second, as the
        # first claim was full
        assert rooms.claims(Counter({"q": half})) == [("q", half)]
        rooms.back([claim])
        rooms.running["q"] = 0
        rooms.ready.add("q")


@given(
    rate=st.floats(0.5, 200),
    steps=st.lists(st.tuples(st.floats(0, 0.5), st.integers(0, 100), st.booleans()), max_size=60),
)
def test_claims_keep_to_the_rate_and_unused_tokens_go_back(
    rate: float, steps: list[tuple[float, int, bool]]
) -> None:
    now = [0.0]
    rooms, waits = rooms_of(1, now)
    rooms.set_queues({"q": model.QueueSettings("q", max_dispatches_per_second=rate)})
    got_total = 0
    for dt, available, fails in steps:
        now[0] += dt
        rooms.ready.add("q")
        waits.clear()
        claims = rooms.claims(Counter())
        if not claims:
            assert "q" in rooms.ready and waits and waits[-1] > 0  # woken when a token comes
            continue
        [(queue, room)] = claims
        if room < DEFAULT:
            assert waits and waits[-1] > 0  # short of tokens: a cycle once more come
        if fails:
            rooms.not_claimed(claims)
            assert "q" in rooms.ready
            continue
        got = min(room, available)
        rooms.claimed(queue, room, got)
        got_total += got
    assert got_total <= rate * now[0] + max(1.0, rate) + 1e-6


def test_tokens_a_claim_did_not_use_can_be_claimed_at_once() -> None:
    rooms, waits = rooms_of(1)
    rooms.set_queues({"q": model.QueueSettings("q", max_dispatches_per_second=10)})
    assert rooms.claims(Counter()) == [("q", DEFAULT)]  # 10 tokens: room for the limit
    rooms.claimed("q", DEFAULT, 3)  # 5 unused
    rooms.ready.add("q")
    assert rooms.claims(Counter()) == [("q", 7)] and waits  # 2 left, 5 back; short of 8
    rooms.not_claimed([("q", 7)])  # a failed cycle: all 7 back
    assert rooms.claims(Counter()) == [("q", 7)]


def test_a_failed_claim_over_the_limit_takes_no_tokens() -> None:
    # the limit lowered below what runs: the room is negative, and a failed fire or cycle
    # given it must not take tokens away
    rooms, waits = rooms_of(1)
    rooms.set_queues(
        {"q": model.QueueSettings("q", max_concurrency=5, max_dispatches_per_second=10)}
    )
    rooms.running["q"] = 50
    assert rooms.room("q") <= 0
    rooms.not_claimed([("q", rooms.room("q")), ("q", 0)])
    rooms.running["q"] = 0
    assert rooms.claims(Counter()) == [("q", 5)] and not waits  # all 10 tokens still there


@dataclass
class Cycle:
    claims: list[Claim]
    endings: Counter[str]


@dataclass
class Dispatch:
    """The dispatcher's bookkeeping around QueueRooms, with jobs as counts per queue."""

    rooms: QueueRooms
    limits: dict[str, int]
    pool: Counter[str]  # jobs QUEUED in the database
    executing: Counter[str] = field(default_factory=Counter)
    outbox: Counter[str] = field(default_factory=Counter)  # ended, end not stored yet
    in_flight: list[Cycle] = field(default_factory=list)
    paused: set[str] = field(default_factory=set)

    @property
    def overlap(self) -> bool:
        return self.rooms.cycles_in_flight > 1

    def end(self, queue: str) -> None:
        if self.executing[queue] > 0:
            self.executing[queue] -= 1
            self.outbox[queue] += 1

    def start_cycle(self) -> None:
        if len(self.in_flight) >= self.rooms.cycles_in_flight:
            return
        claims = self.rooms.claims(self.outbox)
        for queue, room in claims:
            assert queue not in self.paused
            assert not self.overlap or room <= -(-self.limits[queue] // 2)
        if not claims and not self.outbox:
            return
        cycle = Cycle(claims, self.outbox)
        self.outbox = Counter()
        if self.overlap:
            self.rooms.sent(claims)
            self.rooms.settling.update(cycle.endings)
        self.in_flight.append(cycle)
        if not self.overlap:
            self.finish(0, fails=False)  # the SQLite loop awaits its cycle

    def finish(self, index: int, *, fails: bool) -> None:
        cycle = self.in_flight.pop(index)
        if fails:
            self.rooms.not_claimed(cycle.claims)
            self.outbox.update(cycle.endings)  # stored by a later cycle
        else:
            self.rooms.running.subtract(cycle.endings)
            for queue, room in cycle.claims:
                got = min(room, self.pool[queue])
                self.pool[queue] -= got
                self.rooms.claimed(queue, room, got)
                self.rooms.running[queue] += got
                self.executing[queue] += got
        if self.overlap:
            self.rooms.back(cycle.claims)
            self.rooms.settling.subtract(cycle.endings)

    def pause(self, queue: str, paused: bool) -> None:
        (self.paused.add if paused else self.paused.discard)(queue)
        settings = self.rooms.settings.get(queue)
        limit = settings and settings.max_concurrency
        self.rooms.set_queues({queue: model.QueueSettings(queue, paused, limit)})

    def check(self) -> None:
        for queue, limit in self.limits.items():
            assert self.executing[queue] <= limit
            held = self.executing[queue] + self.outbox[queue]
            held += sum(c.endings[queue] for c in self.in_flight)
            assert self.rooms.running[queue] == held


QUEUES = ["a", "b"]
step = st.one_of(
    st.tuples(st.just("end"), st.sampled_from(QUEUES)),
    st.tuples(st.just("cycle"), st.none()),
    st.tuples(st.just("back"), st.integers(0, 1)),
    st.tuples(st.just("fail"), st.integers(0, 1)),
    st.tuples(st.just("wake"), st.sampled_from(QUEUES)),
    st.tuples(st.just("pause"), st.sampled_from(QUEUES)),
    st.tuples(st.just("resume"), st.sampled_from(QUEUES)),
)


@settings(max_examples=300)
@given(
    cycles=st.sampled_from([1, 2]),
    limit_a=st.integers(1, 9),
    jobs=st.tuples(st.integers(0, 40), st.integers(0, 40)),
    steps=st.lists(step, max_size=80),
)
def test_a_queue_never_runs_more_than_its_limit_and_drains(
    cycles: int, limit_a: int, jobs: tuple[int, int], steps: list[tuple[str, object]]
) -> None:
    rooms, _ = rooms_of(cycles)
    # "a" has its own limit, "b" the default
    rooms.set_queues({"a": model.QueueSettings("a", max_concurrency=limit_a)})
    rooms.ready |= {q for q, n in zip(QUEUES, jobs, strict=True) if n}  # as at start
    d = Dispatch(rooms, {"a": limit_a, "b": DEFAULT}, Counter(dict(zip(QUEUES, jobs, strict=True))))
    for kind, arg in steps:
        if kind == "end":
            assert isinstance(arg, str)
            d.end(arg)
        elif kind == "cycle":
            d.start_cycle()
        elif kind in ("back", "fail") and d.in_flight:
            assert isinstance(arg, int)
            d.finish(min(arg, len(d.in_flight) - 1), fails=kind == "fail")
        elif kind == "wake":
            assert isinstance(arg, str)
            rooms.ready.add(arg)  # a spurious wake-up claims nothing more than room
        elif kind in ("pause", "resume"):
            assert isinstance(arg, str)
            d.pause(arg, kind == "pause")
        d.check()
    for queue in list(d.paused):
        d.pause(queue, False)
    for _ in range(1000):  # every job runs, with no wake-up from outside
        while d.in_flight:
            d.finish(0, fails=False)
        for queue in QUEUES:
            while d.executing[queue]:
                d.end(queue)
        d.start_cycle()
        d.check()
        if not (+d.pool or +d.outbox or d.in_flight or +d.executing):
            break
    assert not +d.pool, "a queue with jobs left was forgotten"
    assert set(rooms.running.values()) <= {0} and set(rooms.settling.values()) <= {0}
