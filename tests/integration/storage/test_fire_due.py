"""Firing: due jobs promoted and claimed in one transaction, and the misfire catch-up."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest
from jobwheel.server.model import SECOND, EventType, Job, JobState, MisfirePolicy
from jobwheel.server.storage import Store
from jobwheel.server.storage.transitions import FireClaim

from tests.integration.storage.factories import T0, full_job, new_job

WORKER = "inprocess@me"


def fire_claim(rooms: dict[str, int], started: list[Job]) -> FireClaim:
    return FireClaim(
        lambda queue: rooms.get(queue, 0), started.extend, {"noop"}, WORKER, T0 + 10 * SECOND
    )


async def test_due_jobs_start_in_the_promote_transaction(store: Store) -> None:
    due = [new_job(state=JobState.SCHEDULED, next_run_time=T0 - i) for i in range(3)]
    later = new_job(state=JobState.SCHEDULED, next_run_time=T0 + 1)
    other = new_job(state=JobState.SCHEDULED, next_run_time=T0, queue="full")
    await store.insert_jobs([*due, later, other])
    head = await store.head_revision()
    started: list[Job] = []
    queues, claimed = await store.fire_due(T0, claim=fire_claim({"default": 2}, started))
    assert queues == {"default", "full"}
    assert started == claimed and len(claimed) == 2  # the room given, FIFO by seq
    assert [j.id for j in claimed] == [due[0].id, due[1].id]
    assert all(j.state is JobState.RUNNING and j.start_time == T0 for j in claimed)
    assert all(j.attempt == 1 and j.execution_count == 1 for j in claimed)
    for job in claimed:
        [attempt] = await store.list_attempts(job.id, limit=10)
        assert attempt.start_time == T0
    states = {j.id: (await store.get_job(j.id)) for j in [*due, later, other]}
    assert states[due[2].id].state is JobState.QUEUED  # beyond the room
    assert states[other.id].state is JobState.QUEUED  # a queue without room
    assert states[later.id].state is JobState.SCHEDULED  # never early
    events = await store.read_events(head, 100)
    assert [e.revision for e in events] == list(range(head + 1, head + 7))  # gap-free
    kinds = [(e.type, e.job.id) for e in events]
    queued = [k for k in kinds if k[0] is EventType.QUEUED]
    assert len(queued) == 4 and kinds[:4] == queued  # each promotion, then each start
    assert kinds[4:] == [(EventType.STARTED, j.id) for j in claimed]


async def test_without_a_claim_it_only_promotes(store: Store) -> None:
    await store.insert_jobs([new_job(state=JobState.SCHEDULED, next_run_time=T0)])
    assert await store.fire_due(T0) == ({"default"}, [])
    assert await store.fire_due(T0) == (set(), [])


async def test_catch_up_moves_every_late_recurring_job_in_batches(store: Store) -> None:
    # more than one batch of late recurring jobs, among one-offs that are simply due
    base = full_job(http=None, idempotency_key=None, task="noop")
    assert base.schedule is not None
    schedule = replace(
        base.schedule, misfire_policy=MisfirePolicy.SKIP, cron=None, interval=SECOND, end_time=None
    )
    late = [
        replace(base, id=f"late-{i}", schedule=schedule, next_run_time=T0 - 60 * SECOND)
        for i in range(1_200)
    ]
    one_off = new_job(state=JobState.SCHEDULED, next_run_time=T0 - 60 * SECOND)
    for start in range(0, len(late), 500):
        await store.insert_jobs(late[start : start + 500])
    await store.insert_jobs([one_off])
    now = T0
    queues, _ = await store.fire_due(now, now - SECOND, lambda job: (now + SECOND, 5))
    assert queues == {"default"}  # the one-off; the recurring ones moved past now
    moved = [await store.get_job(j.id) for j in late]
    assert all(j is not None and j.state is JobState.SCHEDULED for j in moved)
    assert all(
        j is not None and (j.next_run_time, j.skipped_count) == (now + SECOND, 5) for j in moved
    )


async def test_a_fire_stores_the_endings_beside_it_in_its_transaction(store: Store) -> None:
    from jobwheel.server.model import AttemptOutcome
    from jobwheel.server.rules import states
    from jobwheel.server.rules.attempt import AttemptResult

    await store.insert_jobs([new_job(payload={"n": i}) for i in range(2)])
    running = await store.claim("default", {"noop"}, 2, WORKER, T0, T0 + 10 * SECOND)
    due = new_job(state=JobState.SCHEDULED, next_run_time=T0 + 5)
    await store.insert_jobs([due])
    head = await store.head_revision()
    ok = AttemptResult(AttemptOutcome.SUCCEEDED)
    ended = states.settle(running[0], ok, T0 + 5, 0.5)
    stale = states.settle(replace(running[1], attempt=7), ok, T0 + 5, 0.5)  # not held: fenced
    told: list[list[bool]] = []
    started: list[Job] = []
    claim = replace(
        fire_claim({"default": 1}, started), settlements=[ended, stale], settled=told.append
    )
    queues, claimed = await store.fire_due(T0 + 5, claim=claim)
    assert told == [[True, False]] and queues == {"default"}
    assert [j.id for j in claimed] == [due.id] and started == claimed
    done = await store.get_job(running[0].id)
    assert done is not None and done.state is JobState.COMPLETED
    still = await store.get_job(running[1].id)
    assert still is not None and still.state is JobState.RUNNING
    [attempt] = await store.list_attempts(running[0].id, limit=10)
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    events = await store.read_events(head, 100)
    assert [e.revision for e in events] == list(range(head + 1, head + 4))  # gap-free
    assert [(e.type, e.job.id) for e in events] == [
        (EventType.COMPLETED, running[0].id),  # the endings first, then the fire
        (EventType.QUEUED, due.id),
        (EventType.STARTED, due.id),
    ]


async def test_catch_up_tells_of_each_move_in_its_events(store: Store) -> None:
    base = full_job(http=None, idempotency_key=None, task="noop")
    assert base.schedule is not None
    schedule = replace(
        base.schedule, misfire_policy=MisfirePolicy.SKIP, cron=None, interval=SECOND, end_time=None
    )
    moving, ending = (
        replace(base, id=name, schedule=schedule, next_run_time=T0 - 60 * SECOND)
        for name in ("moving", "ending")
    )
    one_off = new_job(state=JobState.SCHEDULED, next_run_time=T0 - SECOND)
    await store.insert_jobs([moving, ending, one_off])
    head = await store.head_revision()
    moves = {"moving": (T0 + SECOND, 3), "ending": (None, 0)}
    queues, _ = await store.fire_due(T0, T0 - SECOND, lambda job: moves[job.id])
    assert queues == {"default"}
    events = await store.read_events(head, 100)
    assert [e.revision for e in events] == list(range(head + 1, head + 4))  # gap-free
    assert [(e.type, e.job.id) for e in events] == [
        (EventType.MISFIRE_SKIPPED, "moving"),
        (EventType.COMPLETED, "ending"),
        (EventType.QUEUED, one_off.id),
    ]
    for event in events:  # each snapshot is the job as the fire left it
        stored = await store.get_job(event.job.id)
        assert stored is not None
        fields = ("state", "next_run_time", "skipped_count", "end_time", "update_time")
        assert [getattr(event.job, f) for f in fields] == [getattr(stored, f) for f in fields]
    moved = await store.get_job("moving")
    assert moved is not None and (moved.next_run_time, moved.skipped_count) == (T0 + SECOND, 3)
    assert moved.state is JobState.SCHEDULED
    ended = await store.get_job("ending")
    assert ended is not None and ended.state is JobState.COMPLETED and ended.end_time == T0


async def test_a_fire_whose_claim_fails_changes_nothing(store: Store) -> None:
    due = new_job(state=JobState.SCHEDULED, next_run_time=T0)
    await store.insert_jobs([due])
    head = await store.head_revision()

    def no_room(queue: str) -> int:
        raise RuntimeError("no room today")

    started: list[Job] = []
    failing = replace(fire_claim({}, started), room=no_room)
    with pytest.raises(RuntimeError, match="no room today"):
        await store.fire_due(T0, claim=failing)
    assert started == [] and await store.head_revision() == head
    still = await store.get_job(due.id)
    assert still is not None and still.state is JobState.SCHEDULED
    # the write connection is free again: the next fire promotes and starts the job
    queues, claimed = await store.fire_due(T0, claim=fire_claim({"default": 1}, started))
    assert queues == {"default"} and [j.id for j in claimed] == [due.id] == [j.id for j in started]


async def test_a_cancelled_fire_stays_cancelled_whatever_its_rollback_meets(
    store: Store, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fire cancelled between its statements (a server stopping) whose rollback then fails,
    # as on a connection already closed: the cancellation, not the rollback's error, must come
    # out, or the dispatcher's retry loop would take it for a failed fire and go on
    from jobwheel.server.storage import sqlite_fire

    def closed(db: object) -> None:
        raise ValueError("Connection closed")

    async def lost(transaction: object) -> None:
        raise asyncpg.InterfaceError("connection is closed")

    def cancelled(queue: str) -> int:
        raise asyncio.CancelledError

    due = new_job(state=JobState.SCHEDULED, next_run_time=T0)
    await store.insert_jobs([due])
    started: list[Job] = []
    with monkeypatch.context() as patch:
        if backend == "sqlite":
            patch.setattr(sqlite_fire, "roll_back", closed)
        else:  # asyncpg's own rollback (storage.pg_cycle), which then invalidates the connection
            patch.setattr(asyncpg.transaction.Transaction, "rollback", lost)
        with pytest.raises(asyncio.CancelledError):
            await store.fire_due(T0, claim=replace(fire_claim({}, started), room=cancelled))
    # the transaction left open went back with its connection, rolled back there
    still = await store.get_job(due.id)
    assert still is not None and still.state is JobState.SCHEDULED
    queues, claimed = await store.fire_due(T0, claim=fire_claim({"default": 1}, started))
    assert queues == {"default"} and [j.id for j in claimed] == [due.id]
