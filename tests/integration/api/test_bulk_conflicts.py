"""A bulk action runs one transaction per 1,000 jobs: a batch the database rolls back for a
concurrent transaction (a deadlock) runs again; one that keeps failing answers ABORTED, the
batches before it staying committed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from jobwheel.server.api.errors import expected_status
from jobwheel.server.clock import SystemClock
from jobwheel.server.core import CONFLICT_TRIES, Core
from jobwheel.server.model import JobFilter, JobState
from jobwheel.server.rules import states
from jobwheel.server.storage import Store, open_store
from sqlalchemy import exc as sa_exc

from tests.integration.storage.factories import new_job


class _DeadlockDetected(Exception):
    sqlstate = "40P01"  # what asyncpg's DeadlockDetectedError carries


def _deadlock() -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("UPDATE jobs ...", {}, _DeadlockDetected("deadlock detected"))


async def _with_jobs(db_url: str, n: int) -> Store:
    store = await open_store(db_url)
    for start in range(0, n, 1000):
        await store.insert_jobs([new_job(queue="bulk") for _ in range(min(1000, n - start))])
    return store


def _failing(store: Store, monkeypatch: pytest.MonkeyPatch, calls: set[int]) -> list[int]:
    """Makes apply_action_batch's calls numbered in `calls` (1-based) fail with a deadlock."""
    real = store.apply_action_batch
    seen: list[int] = []

    async def apply_action_batch(*args: Any, **kwargs: Any) -> Any:
        seen.append(len(seen) + 1)
        if seen[-1] in calls:
            raise _deadlock()
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "apply_action_batch", apply_action_batch)
    return seen


async def _states(store: Store) -> dict[JobState, int]:
    counts: dict[JobState, int] = {}
    for job in await store.list_jobs(JobFilter(queues=("bulk",)), limit=5000, after_seq=None):
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


async def test_a_deadlocked_batch_runs_again(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await _with_jobs(db_url, 2500)
    try:
        seen = _failing(store, monkeypatch, {2})  # the second batch's first run
        core = Core(store, SystemClock())
        flt = JobFilter(queues=("bulk",))
        assert await core.act_on_all(flt, states.cancel("bulk")) == 2500
        assert seen == [1, 2, 3, 4]
        assert await _states(store) == {JobState.CANCELLED: 2500}
    finally:
        await store.close()


async def test_a_batch_that_keeps_deadlocking_answers_aborted(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _with_jobs(db_url, 2500)
    try:
        seen = _failing(store, monkeypatch, set(range(2, 2 + CONFLICT_TRIES)))
        core = Core(store, SystemClock())
        with pytest.raises(sa_exc.DBAPIError) as raised:
            await core.act_on_all(JobFilter(queues=("bulk",)), states.cancel("bulk"))
        assert len(seen) == 1 + CONFLICT_TRIES
        status = expected_status(raised.value)
        assert status is not None and status.code == grpc.StatusCode.ABORTED
        # the first batch stays committed, as ABORTED's description says
        assert await _states(store) == {JobState.CANCELLED: 1000, JobState.QUEUED: 1500}
    finally:
        await store.close()
