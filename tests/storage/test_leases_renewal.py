"""Lease renewal and released attempts, on both backends."""

from __future__ import annotations

from jobwheel.server.execution import outcomes
from jobwheel.server.execution.base import AttemptResult, Outcome
from jobwheel.server.model import JobState, RetryPolicy
from jobwheel.server.storage import Store, open_store

from tests.storage.factories import T0, new_job
from tests.storage.test_migrations import back_to

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
        assert await store.settle([outcomes.lost(running, now + 1, "server stopped", counts=False)])
        now += 2
    # both tries of the budget are left: the first failure retries, the second fails the job
    for n in (4, 5):
        (running,) = await store.claim("default", {"noop"}, 1, WORKER, now, now + 10)
        assert running.attempt == n
        failure = outcomes.settle(running, AttemptResult(Outcome.FAILED, error="x"), now + 1, 0.5)
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
