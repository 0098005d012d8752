"""The dispatch cycle's transaction (settle what ended, claim what is next), on both backends:
fenced like separate settlements and claims, one attempt row per attempt, gap-free events."""

from __future__ import annotations

import asyncio

from jobwheel.server.model import AttemptOutcome, Event, EventType, HttpTarget, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.storage import Store

from tests.integration.storage.factories import T0, new_job

WORKER = "inprocess@me"
OK = AttemptResult(AttemptOutcome.SUCCEEDED, result={"ok": True})


def _recorder(store: Store) -> list[Event]:
    seen: list[Event] = []
    store.event_sink = seen.extend
    return seen


async def test_one_cycle_settles_the_endings_and_claims_the_next_jobs(store: Store) -> None:
    await store.insert_jobs([new_job(payload={"n": i}) for i in range(5)])
    first = await store.claim("default", {"noop"}, 2, WORKER, T0, T0 + 100)
    seen = _recorder(store)
    endings = [states.settle(job, OK, T0 + 5, 0.5) for job in first]
    applies, [claimed, none] = await store.dispatch_cycle(
        endings, [("default", 2), ("empty", 3)], {"noop"}, WORKER, T0 + 6, T0 + 106
    )
    assert applies == [True, True] and none == []
    assert [j.payload["n"] for j in claimed] == [2, 3]  # FIFO after the first two
    assert all(j.state is JobState.RUNNING and j.attempt == 1 for j in claimed)
    for job in first:
        done = await store.get_job(job.id)
        assert done is not None and done.state is JobState.COMPLETED
        assert done.result == {"ok": True} and done.worker_id == ""
        [attempt] = await store.list_attempts(job.id, limit=10, after=None)
        assert attempt.outcome is AttemptOutcome.SUCCEEDED and attempt.end_time == T0 + 5
    for job in claimed:
        [attempt] = await store.list_attempts(job.id, limit=10, after=None)
        assert (attempt.number, attempt.outcome, attempt.worker_id) == (
            1,
            AttemptOutcome.RUNNING,
            WORKER,
        )
    # the endings' events first, then the starts: one gap-free run of revisions
    assert [(e.type, e.job.id) for e in seen] == [
        *((EventType.COMPLETED, j.id) for j in first),
        *((EventType.STARTED, j.id) for j in claimed),
    ]
    revisions = [e.revision for e in seen]
    assert revisions == list(range(revisions[0], revisions[0] + 4))
    assert await store.head_revision() == revisions[-1]


async def test_a_cycle_applies_only_endings_of_attempts_still_held(store: Store) -> None:
    await store.insert_jobs([new_job() for _ in range(2)])
    held, rerun = await store.claim("default", {"noop"}, 2, WORKER, T0, T0 + 10)
    # the third job's lease expired and another executor runs it now
    lost = states.lost(rerun, T0 + 20, "lease expired", lease_expired_before=T0 + 20)
    assert await store.settle([lost]) == [True]
    [again] = await store.claim("default", {"noop"}, 1, "other@x", T0 + 21, T0 + 40)
    assert again.id == rerun.id and again.attempt == 2
    seen = _recorder(store)
    twice = states.settle(held, OK, T0 + 22, 0.5)
    stale = states.settle(rerun, OK, T0 + 22, 0.5)  # reports attempt 1: fenced off
    applies, _ = await store.dispatch_cycle(
        [twice, stale, twice], [], {"noop"}, WORKER, T0 + 22, T0 + 60
    )
    assert applies == [True, False, False]  # a duplicate in one batch applies once
    assert [(e.type, e.job.id) for e in seen] == [(EventType.COMPLETED, held.id)]
    running = await store.get_job(rerun.id)
    assert running is not None and running.state is JobState.RUNNING and running.attempt == 2
    assert [a.outcome for a in await store.list_attempts(rerun.id, limit=10, after=None)] == [
        AttemptOutcome.LOST,
        AttemptOutcome.RUNNING,
    ]


async def test_a_lost_attempt_is_settled_only_once_its_lease_ran_out(store: Store) -> None:
    await store.insert_jobs([new_job()])
    [job] = await store.claim("default", {"noop"}, 1, WORKER, T0, T0 + 10)
    early = states.lost(job, T0 + 5, "lease expired", lease_expired_before=T0 + 5)
    assert await store.dispatch_cycle([early], [], {"noop"}, WORKER, T0 + 5, T0 + 50) == (
        [False],
        [],
    )
    late = states.lost(job, T0 + 11, "lease expired", lease_expired_before=T0 + 11)
    applies, [claimed] = await store.dispatch_cycle(
        [late], [("default", 1)], {"noop"}, WORKER, T0 + 11, T0 + 50
    )
    # re-queued by the settlement, then claimed again in the same transaction
    assert applies == [True] and [j.id for j in claimed] == [job.id]
    assert claimed[0].attempt == 2
    outcomes = [a.outcome for a in await store.list_attempts(job.id, limit=10, after=None)]
    assert outcomes == [AttemptOutcome.LOST, AttemptOutcome.RUNNING]


async def test_of_a_jobs_settlements_in_one_batch_the_first_that_holds_applies(
    store: Store,
) -> None:
    await store.insert_jobs([new_job()])
    [first] = await store.claim("default", {"noop"}, 1, WORKER, T0, T0 + 10)
    lost = states.lost(first, T0 + 11, "lease expired", lease_expired_before=T0 + 11)
    assert await store.settle([lost]) == [True]
    [second] = await store.claim("default", {"noop"}, 1, WORKER, T0 + 12, T0 + 30)
    stale = states.settle(first, OK, T0 + 13, 0.5)  # attempt 1: fenced off
    early = states.lost(second, T0 + 13, "lease expired", lease_expired_before=T0 + 13)
    done = states.settle(second, OK, T0 + 13, 0.5)
    seen = _recorder(store)
    # neither the stale report nor the early loss holds: the completion after them applies
    applies, _ = await store.dispatch_cycle(
        [stale, early, done, done], [], {"noop"}, WORKER, T0 + 13, T0 + 40
    )
    assert applies == [False, False, True, False]
    assert [(e.type, e.job.id) for e in seen] == [(EventType.COMPLETED, first.id)]
    outcomes = [a.outcome for a in await store.list_attempts(first.id, limit=10, after=None)]
    assert outcomes == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]


async def test_a_cycle_claims_the_tasks_it_runs_best_priority_first(store: Store) -> None:
    hook = HttpTarget("https://example.com/hook", "POST", {})
    elsewhere = new_job(task="other", payload={"n": 0})  # no handler here, no HTTP target
    await store.insert_jobs(
        [
            elsewhere,
            new_job(payload={"n": 1}),
            new_job(task="other", http=hook, payload={"n": 2}),
            new_job(payload={"n": 3}, priority=5),
            new_job(task="other", queue="q2", http=hook, payload={"n": 4}),
        ]
    )
    _, [claimed] = await store.dispatch_cycle([], [("default", 5)], {"noop"}, WORKER, T0, T0 + 9)
    assert [j.payload["n"] for j in claimed] == [3, 1]  # no HTTP targets: not asked for
    _, [hooks, none, q2] = await store.dispatch_cycle(
        [],
        [("default", 5), ("empty", 1), ("q2", 1)],
        set(),
        WORKER,
        T0 + 1,
        T0 + 9,
        include_http=True,
    )
    assert [j.payload["n"] for j in hooks] == [2] and none == []
    assert [j.payload["n"] for j in q2] == [4]
    for job in [*claimed, *hooks, *q2]:
        stored = await store.get_job(job.id)
        assert stored == job and (job.attempt, job.execution_count) == (1, 1)
        assert (job.worker_id, job.start_time, job.lease_expire_time) == (
            WORKER,
            job.update_time,
            T0 + 9,
        )
    waiting = await store.get_job(elsewhere.id)
    assert waiting is not None and waiting.state is JobState.QUEUED


async def test_concurrent_claims_share_out_jobs_with_one_attempt_row_each(store: Store) -> None:
    # the claim and its attempt rows are one statement on PostgreSQL: claims racing (SKIP
    # LOCKED) never take a job twice, and each claimed attempt has exactly its own row
    await store.insert_jobs([new_job() for _ in range(60)])
    lost = await store.claim("default", {"noop"}, 5, WORKER, T0, T0 + 10)
    for job in lost:  # back to QUEUED: their next claim is attempt 2 of the same execution
        assert await store.settle([states.lost(job, T0 + 20, "gone", lease_expired_before=T0 + 20)])
    cycles = [
        store.dispatch_cycle([], [("default", 20)], {"noop"}, f"w{i}", T0 + 30, T0 + 90)
        for i in range(2)
    ]
    leases = [store.claim("default", {"noop"}, 20, "remote", T0 + 30, T0 + 90)]
    got = await asyncio.gather(*cycles, *leases)
    claimed = [j for _, [jobs] in got[:2] for j in jobs] + [j for j in got[2]]
    assert len(claimed) == 60 and len({j.id for j in claimed}) == 60
    for job in claimed:
        rows = await store.list_attempts(job.id, limit=10, after=None)
        running = [a for a in rows if a.outcome is AttemptOutcome.RUNNING]
        assert [(a.number, a.execution) for a in running] == [(job.attempt, job.execution_count)]
        assert running[0].worker_id == job.worker_id
        assert running[0].start_time == job.start_time >= T0 + 30  # never before the claim
        assert len(rows) == job.attempt  # one row per attempt, the lost one included
    assert {j.attempt for j in claimed if j.id in {x.id for x in lost}} == {2}


async def test_a_start_is_never_before_the_jobs_last_change(store: Store) -> None:
    # Another replica queued these (a fire) with a clock reading later than this claim's
    # `now`, taken before the claim waited for that commit: the start is the later time, and
    # the attempt row agrees.
    later = T0 + 1_000
    await store.insert_jobs([new_job(create_time=later, next_run_time=later) for _ in range(3)])
    await store.insert_jobs([new_job(task="remote", create_time=later, next_run_time=later)])
    await store.insert_jobs([new_job(create_time=T0 - 5, next_run_time=T0 - 5)])
    (by_claim,) = await store.claim("default", {"noop"}, 1, WORKER, T0, T0 + 100)
    _, [by_cycle] = await store.dispatch_cycle([], [("default", 2)], {"noop"}, WORKER, T0, T0 + 99)
    (by_lease,) = await store.lease("w1", queue_names=(), tasks=("remote",), skip_tasks=(),
                                    limit=1, now=T0, lease_until=T0 + 100)  # fmt: skip
    started = [by_claim, *by_cycle, by_lease]
    assert len(started) == 4
    for job in started:
        expected = T0 if job.create_time < T0 else later
        stored = await store.get_job(job.id)
        assert stored is not None
        assert (job.start_time, job.update_time) == (expected, expected)
        assert (stored.start_time, stored.update_time) == (expected, expected)
        [attempt] = await store.list_attempts(job.id, limit=10, after=None)
        assert attempt.start_time == expected
