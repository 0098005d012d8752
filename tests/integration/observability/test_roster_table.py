"""What a replica's roster writes to the shared workers table, and what it reads back."""

from __future__ import annotations

import pytest
from jobwheel.server.clock import FakeClock
from jobwheel.server.execution import roster as roster_module
from jobwheel.server.execution.roster import NO_WORKER_AFTER, Roster
from jobwheel.server.model import SECOND
from jobwheel.server.storage import Store
from jobwheel.server.storage.workers import WorkerRow

from tests.integration.storage.factories import T0
from tests.integration.storage.test_workers_and_counts import set_stored_queues

A, B = "inprocess@a", "inprocess@b"
SENTINEL = ("sentinel",)


async def stored(store: Store) -> dict[str, WorkerRow]:
    return {r.id: r for r in await store.list_workers(0)}


async def written_once(store: Store, clock: FakeClock, *worker_ids: str) -> Roster:
    """Replica A's roster after one flush of the workers (queue q1, task t), whose stored
    queues were then set to SENTINEL behind its back, and a second later."""
    roster = Roster(store, clock, A, [])
    for worker_id in worker_ids:
        roster.leased(worker_id, ["q1"], ["t"])
    await roster.flush()
    for worker_id in worker_ids:
        await set_stored_queues(store, worker_id, '["sentinel"]')
    clock.advance(SECOND)
    return roster


async def test_a_heartbeat_or_the_same_asks_move_only_last_seen(store: Store) -> None:
    clock = FakeClock(T0)
    roster = await written_once(store, clock, "w1", "w2", "w3")
    roster.touched("w1")
    roster.leased("w2", ["q1"], ["t"])
    roster.leased("w3", ["q2"], ["t"])  # asks changed: written in full
    await roster.flush()
    rows = await stored(store)
    assert (rows["w1"].queues, rows["w2"].queues, rows["w3"].queues) == (
        SENTINEL,
        SENTINEL,
        ("q2",),
    )
    assert {rows[w].last_seen for w in ("w1", "w2", "w3")} == {T0 + SECOND}
    # changed back: written again
    clock.advance(SECOND)
    roster.leased("w3", ["q1"], ["t"])
    await roster.flush()
    assert (await stored(store))["w3"].queues == ("q1",)


async def test_a_row_another_replica_wrote_since_is_written_in_full(store: Store) -> None:
    clock = FakeClock(T0)
    roster = await written_once(store, clock, "w1", "w2")
    other = Roster(store, clock, B, [])
    other.leased("w1", ["q9"], [])
    await other.flush()
    clock.advance(SECOND)
    roster.touched("w1")
    roster.touched("w2")
    await roster.flush()
    rows = await stored(store)
    assert (rows["w1"].server, rows["w1"].queues, rows["w1"].tasks) == (A, ("q1",), ("t",))
    assert rows["w1"].last_seen == T0 + 2 * SECOND
    assert rows["w2"].queues == SENTINEL


async def test_a_pruned_row_is_written_in_full(store: Store) -> None:
    clock = FakeClock(T0)
    roster = await written_once(store, clock, "w1", "w2")
    await store.remove_worker("w1")  # as forget_workers would
    roster.touched("w1")
    roster.touched("w2")
    await roster.flush()
    rows = await stored(store)
    assert (rows["w1"].server, rows["w1"].queues, rows["w1"].tasks) == (A, ("q1",), ("t",))
    assert rows["w2"].queues == SENTINEL


async def test_a_worker_forgotten_and_heard_again_is_written_in_full(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    roster = await written_once(store, clock, "w1", "w2")
    monkeypatch.setattr(roster_module, "MAX_REMOTE_WORKERS", 2)
    roster.touched("w2")
    roster.leased("w3", [], [])  # w1 is forgotten
    roster.touched("w2")
    roster.leased("w1", ["q1"], ["t"])  # w3 is forgotten
    assert list(roster._local) == ["w2", "w1"]
    await roster.flush()
    rows = await stored(store)
    assert (rows["w1"].queues, rows["w2"].queues) == (("q1",), SENTINEL)


async def test_a_flush_reads_back_only_the_rows_it_does_not_hold(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    roster = Roster(store, clock, A, ["in.a"])
    roster.started -= NO_WORKER_AFTER  # past the time workers take to ask
    other = Roster(store, clock, B, ["in.b"])
    other.leased("w-b", ["qb"], [])
    await other.flush()
    monkeypatch.setattr(roster_module, "MAX_REMOTE_WORKERS", 1)
    roster.leased("w1", ["q1"], [])
    await roster.flush()
    assert {r.id for r in roster._known} == {A, B, "w-b"}
    clock.advance(1)
    roster.leased("w2", ["q2"], [])  # w1 is forgotten here, its row stays
    await roster.flush()
    assert {r.id for r in roster._known} == {A, B, "w-b", "w1"}
    for queue, task in (("q1", "x"), ("q2", "x"), ("qb", "x"), ("q9", "in.b"), ("q9", "in.a")):
        assert not roster.unserved(queue, task)
    assert roster.unserved("q9", "x")


async def replicas(store: Store) -> tuple[FakeClock, Roster, Roster]:
    """Replica A's roster, which saw worker w1 lease (queue q1, task t) and flushed, and
    replica B's, which has heard of nobody yet; both past the time workers take to ask."""
    clock = FakeClock(T0)
    leasing, beating = Roster(store, clock, A, []), Roster(store, clock, B, [])
    for roster in (leasing, beating):
        roster.started -= NO_WORKER_AFTER
    leasing.leased("w1", ["q1"], ["t"])
    await leasing.flush()
    return clock, leasing, beating


async def test_a_worker_heard_only_in_heartbeats_keeps_the_asks_another_replica_wrote(
    store: Store,
) -> None:
    clock, leasing, beating = await replicas(store)  # w1's heartbeats reach B
    clock.advance(SECOND)
    beating.touched("w1")
    beating.touched("w2")  # nobody knows what it asks for yet
    await beating.flush()
    rows = await stored(store)
    assert (rows["w1"].queues, rows["w1"].tasks, rows["w1"].server) == (("q1",), ("t",), A)
    assert rows["w1"].last_seen == T0 + SECOND
    assert "w2" not in rows  # an empty ask would say any queue and any task
    # only what w1 asked for is served
    assert not beating.unserved("q1", "t")
    assert beating.unserved("q2", "t")
    listed = {row.id: row for row, _ in await beating.workers(60 * SECOND)}
    assert (listed["w1"].queues, listed["w1"].last_seen) == (("q1",), T0 + SECOND)
    # asked for something at last: written in full, and kept by later heartbeats elsewhere
    clock.advance(SECOND)
    leasing.leased("w2", ["q2"], [])
    await leasing.flush()
    clock.advance(SECOND)
    beating.touched("w2")
    await beating.flush()
    rows = await stored(store)
    assert (rows["w2"].queues, rows["w2"].server, rows["w2"].last_seen) == (
        ("q2",),
        A,
        T0 + 3 * SECOND,
    )


async def test_new_asks_stay_written_when_another_replica_saw_the_worker_later(
    store: Store,
) -> None:
    clock, leasing, beating = await replicas(store)
    clock.advance(SECOND)
    leasing.leased("w1", ["q2"], ["t"])  # asks changed, not flushed yet
    clock.advance(SECOND)
    beating.touched("w1")
    await beating.flush()  # the stored row is now seen later than the new asks
    await leasing.flush()
    clock.advance(SECOND)
    leasing.leased("w1", ["q2"], ["t"])  # the same asks again: only last_seen moves
    await leasing.flush()
    row = (await stored(store))["w1"]
    assert (row.queues, row.last_seen) == (("q2",), T0 + 3 * SECOND)


async def test_a_worker_heard_only_elsewhere_stays_known_after_this_replica_forgets_it(
    store: Store,
) -> None:
    clock, leasing, beating = await replicas(store)
    # a long job: its heartbeats reach only the other replica
    for _ in range(3):
        clock.advance(NO_WORKER_AFTER)
        beating.touched("w1")
        await beating.flush()
    await leasing.flush()
    assert "w1" not in leasing._local  # not heard from here for a while: forgotten
    assert not leasing.unserved("q1", "t")
    assert leasing.unserved("q2", "t")
