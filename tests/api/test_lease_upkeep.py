"""The engine renews the leases of the attempts it runs, and only those: a RUNNING job it lost
track of (its end could not be stored, or a claim whose reply was lost) expires and runs again
instead of being kept alive forever by the same process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from jobwheel.server.clock import SystemClock
from jobwheel.server.engine import Engine
from jobwheel.server.model import SECOND, JobState
from jobwheel.server.storage import open_store

from tests.storage.factories import new_job

LEASE = 2 * SECOND  # renewed every 2/3 s


async def test_only_held_leases_are_renewed(db_url: str, tmp_path: Path) -> None:
    store = await open_store(db_url)
    release = tmp_path / "release"

    async def wait_release(payload: dict[str, object]) -> str:
        while not release.exists():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return "done"

    clock = SystemClock()
    engine = Engine(store, clock, {"held": wait_release}, lease=LEASE, recover_every=SECOND // 10)
    try:
        await engine.start()
        now = clock.now()
        [(orphan, _)] = await store.insert_jobs(
            [new_job(task="orphan", create_time=now, next_run_time=now)]
        )
        # claimed for this process, as if the claim's reply never came back
        await store.claim("default", {"orphan"}, 1, engine.worker_id, now, now + 2 * LEASE)
        [(held, _)] = await store.insert_jobs(
            [new_job(task="held", payload={}, create_time=now, next_run_time=now)]
        )
        engine.dispatcher.wake({"default"})
        deadline = time.monotonic() + 3 * LEASE / SECOND + 5
        while True:
            lost = await store.get_job(orphan.id)
            assert lost is not None
            if lost.state is JobState.QUEUED:
                break
            assert time.monotonic() < deadline, "the orphan's lease was kept alive"
            await asyncio.sleep(0.05)
        # the orphan expired; the attempt this process runs is still its own, past its lease
        assert clock.now() > now + 2 * LEASE
        running = await store.get_job(held.id)
        assert running is not None and running.state is JobState.RUNNING
        assert running.attempt == 1 and (running.lease_expire_time or 0) > clock.now()
        release.touch()
        while (done := await store.get_job(held.id)) and done.state is not JobState.COMPLETED:
            assert time.monotonic() < deadline + 5
            await asyncio.sleep(0.05)
        attempts = await store.list_attempts(orphan.id, limit=10, after=None)
        assert [a.outcome.name for a in attempts] == ["LOST"]
    finally:
        await engine.stop(0)
        await store.close()
