"""A remote worker's lease and the settlement of its reports, on both backends (on SQLite
each is one transaction in the driver's thread): the worker's filters, one attempt row per
attempt, gap-free events, fencing by attempt."""

from __future__ import annotations

from jobwheel.server.model import AttemptOutcome, Event, EventType, JobState
from jobwheel.server.rules import states
from jobwheel.server.rules.attempt import AttemptResult
from jobwheel.server.storage import Store

from tests.integration.storage.factories import T0, new_job

WORKER = "remote@w1"
OK = AttemptResult(AttemptOutcome.SUCCEEDED, result={"ok": True})


def _recorder(store: Store) -> list[Event]:
    seen: list[Event] = []
    store.event_sink = seen.extend
    return seen


async def test_a_lease_takes_only_what_the_worker_may_run(store: Store) -> None:
    wanted = [new_job(queue=q, task="work", priority=p) for q, p in (("a", 0), ("b", 5))]
    others = [
        new_job(queue="a", task="other"),  # a task the worker did not ask for
        new_job(queue="paused", task="work"),  # a paused queue starts nothing
    ]
    await store.insert_jobs([*wanted, *others])
    await store.update_queue("paused", paused=True)
    seen = _recorder(store)
    leased = await store.lease(
        WORKER,
        queue_names=(),
        tasks={"work"},
        skip_tasks=(),
        limit=10,
        now=T0,
        lease_until=T0 + 30,
    )
    # best priority first
    assert [j.id for j in leased] == [wanted[1].id, wanted[0].id]
    for job in leased:
        assert (job.state, job.attempt, job.worker_id) == (JobState.RUNNING, 1, WORKER)
        assert job.lease_expire_time == T0 + 30
        [attempt] = await store.list_attempts(job.id, limit=10, after=None)
        assert (attempt.number, attempt.outcome) == (1, AttemptOutcome.RUNNING)
    for job in others:
        left = await store.get_job(job.id)
        assert left is not None and left.state is JobState.QUEUED
    assert [(e.type, e.job.id) for e in seen] == [(EventType.STARTED, j.id) for j in leased]
    revisions = [e.revision for e in seen]
    assert revisions == list(range(revisions[0], revisions[0] + 2))
    assert await store.head_revision() == revisions[-1]


async def test_reports_settle_only_the_attempt_still_held(store: Store) -> None:
    await store.insert_jobs([new_job(task="work") for _ in range(2)])
    held, rerun = await store.lease(
        WORKER,
        queue_names=("default",),
        tasks={"work"},
        skip_tasks=(),
        limit=2,
        now=T0,
        lease_until=T0 + 10,
    )
    lost = states.lost(rerun, T0 + 20, "lease expired", lease_expired_before=T0 + 20)
    assert await store.settle([lost]) == [True]
    [again] = await store.lease(
        "remote@w2",
        queue_names=("default",),
        tasks={"work"},
        skip_tasks=(),
        limit=1,
        now=T0 + 21,
        lease_until=T0 + 40,
    )
    assert again.id == rerun.id and again.attempt == 2
    seen = _recorder(store)
    done = states.settle(held, OK, T0 + 22, 0.5)
    stale = states.settle(rerun, OK, T0 + 22, 0.5)  # attempt 1's report: fenced off
    assert await store.settle([done, stale, done]) == [True, False, False]
    assert [(e.type, e.job.id) for e in seen] == [(EventType.COMPLETED, held.id)]
    assert seen[0].revision == await store.head_revision()
    running = await store.get_job(rerun.id)
    assert running is not None and running.state is JobState.RUNNING and running.attempt == 2
    [attempt] = await store.list_attempts(held.id, limit=10, after=None)
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
