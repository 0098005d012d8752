"""Lease renewal and released attempts, on both backends."""

from __future__ import annotations

from jobwheel.server.model import AttemptOutcome, EventType, JobState, RetryPolicy
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.storage import Store, open_store
from jobwheel.server.storage.leases import Renewal

from tests.integration.storage.factories import T0, new_job
from tests.integration.storage.test_migrations import back_to

WORKER = "inprocess@me"


async def test_renewal_extends_only_the_leases_the_caller_holds(store: Store) -> None:
    await store.insert_jobs([new_job() for _ in range(3)])
    held, lost_track, other = await store.claim("default", {"noop"}, 3, WORKER, T0, T0 + 10)
    await store.insert_jobs([new_job()])
    (someone_elses,) = await store.claim("default", {"noop"}, 1, "other@x", T0, T0 + 10)
    renewed = await store.renew_leases(WORKER, [held.id, other.id, someone_elses.id], T0, T0 + 99)
    assert renewed == 2
    leases = {j: (await store.get_job(j)) for j in (held.id, lost_track.id, someone_elses.id)}
    assert leases[held.id] is not None and leases[held.id].lease_expire_time == T0 + 99
    # a job this process lost track of (its end could not be stored) is left to expire
    assert leases[lost_track.id] is not None and leases[lost_track.id].lease_expire_time == T0 + 10
    assert leases[someone_elses.id] is not None
    assert leases[someone_elses.id].lease_expire_time == T0 + 10
    assert await store.renew_leases(WORKER, [], T0, T0 + 99) == 0
    many = [held.id] + [f"missing-{i}" for i in range(2500)]  # beyond one IN list
    assert await store.renew_leases(WORKER, many, T0, T0 + 100) == 1


async def test_released_attempts_are_recorded_but_not_charged(store: Store) -> None:
    ((job, _),) = await store.insert_jobs([new_job(retry_policy=RetryPolicy(max_attempts=2))])
    now = T0
    for n in range(1, 4):  # three graceful stops while it runs
        (running,) = await store.claim("default", {"noop"}, 1, WORKER, now, now + 10)
        assert (running.attempt, running.released_attempts) == (n, n - 1)
        assert await store.settle([states.lost(running, now + 1, "server stopped", counts=False)])
        now += 2
    # both tries of the budget are left: the first failure retries, the second fails the job
    for n in (4, 5):
        (running,) = await store.claim("default", {"noop"}, 1, WORKER, now, now + 10)
        assert running.attempt == n
        failure = states.settle(
            running, AttemptResult(AttemptOutcome.FAILED, error="x"), now + 1, 0.5
        )
        assert await store.settle([failure])
        after = await store.get_job(job.id)
        assert after is not None
        if n == 4:
            assert after.state is JobState.RETRYING and after.released_attempts == 3
            await store.promote_due(after.next_run_time or now)
        now = (after.next_run_time or now) + 1
    assert after.state is JobState.FAILED and after.attempt == 5
    attempts = await store.list_attempts(job.id, limit=10, after=None)
    assert [a.outcome.name for a in attempts] == ["LOST"] * 3 + ["FAILED"] * 2


async def test_a_version_1_database_gains_released_attempts(store_url: str) -> None:
    first = await open_store(store_url)
    [(job, _)] = await first.insert_jobs([new_job()])
    await back_to(first, 1)
    await first.close()
    upgraded = await open_store(store_url)
    try:
        assert await upgraded.get_job(job.id) == job
        (running,) = await upgraded.claim("default", {"noop"}, 1, WORKER, T0, T0 + 10)
        assert running.released_attempts == 0
    finally:
        await upgraded.close()


async def test_heartbeats_of_many_jobs_extend_only_held_leases(store: Store) -> None:
    await store.insert_jobs([new_job(task="t") for _ in range(4)])
    mine = await store.lease("w1", queue_names=(), tasks=("t",), skip_tasks=(), limit=3, now=T0,
                             lease_until=T0 + 10)  # fmt: skip
    (theirs,) = await store.lease("w2", queue_names=(), tasks=("t",), skip_tasks=(), limit=1,
                                  now=T0, lease_until=T0 + 10)  # fmt: skip
    a, b, c = mine
    head = await store.head_revision()
    renewals = [
        Renewal(a.id, a.epoch, "w1", T0 + 50, T0 + 1),
        Renewal(b.id, b.epoch, "w1", T0 + 60, T0 + 1, {"done": 5}),
        Renewal(c.id, c.epoch + 1, "w1", T0 + 70, T0 + 1),  # not its epoch
        Renewal(theirs.id, theirs.epoch, "w1", T0 + 80, T0 + 1),  # another worker's
        Renewal("missing", 1, "w1", T0 + 90, T0 + 1),
    ]
    renewed = await store.renew(renewals)
    assert [r.applied for r in renewed] == [True, True, False, False, False]
    assert [r.job.lease_expire_time if r.job else None for r in renewed] == [
        T0 + 50, T0 + 60, T0 + 10, T0 + 10, None,
    ]  # fmt: skip
    assert renewed[1].job is not None and renewed[1].job.progress == {"done": 5}
    assert renewed[1].job.update_time == T0 + 1 and renewed[0].job is not None
    assert renewed[0].job.update_time == a.update_time  # a plain heartbeat changes nothing else
    # one PROGRESS event, for the job whose heartbeat carried progress
    events = await store.read_events(head, limit=10)
    assert [(e.type, e.job.id) for e in events] == [(EventType.PROGRESS, b.id)]
    # the same job twice in one batch: each heartbeat answers with the lease it set
    twice = await store.renew(
        [
            Renewal(a.id, a.epoch, "w1", T0 + 200, T0 + 2),
            Renewal(b.id, b.epoch, "w1", T0 + 210, T0 + 2),
            Renewal(a.id, a.epoch, "w1", T0 + 300, T0 + 2),
            Renewal(theirs.id, theirs.epoch, "w2", T0 + 220, T0 + 2),
            Renewal(a.id, a.epoch + 1, "w1", T0 + 400, T0 + 2),  # not its epoch
        ]
    )
    assert [(r.applied, r.job.lease_expire_time if r.job else None) for r in twice] == [
        (True, T0 + 200), (True, T0 + 210), (True, T0 + 300), (True, T0 + 220), (False, T0 + 300),
    ]  # fmt: skip
    many = [Renewal(f"missing-{i}", 1, "w1", T0, T0) for i in range(1200)]  # past one read back
    *missing, held = await store.renew([*many, renewals[0]])
    assert held.applied and not any(r.applied or r.job for r in missing)
