"""A LeaseJobs call its caller cancels (a worker stopping during its long poll) leaves no job
leased to nobody: what it leased goes back at once, not when the lease expires; so a
stopping worker cancels its long polls instead of waiting them out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from jobwheel.client.worker import Worker
from jobwheel.server.api.validate import Limits
from jobwheel.server.api.worker_service import WorkerService
from jobwheel.v1 import job_pb2
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import attempts, enqueue, lease, seconds

QUEUED = (job_pb2.JOB_STATE_QUEUED,)


async def test_a_call_cancelled_while_its_jobs_are_leased_gives_them_back(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await enqueue(server)
    store = server.app.store
    real = store.lease
    leasing = asyncio.Event()

    async def slow_lease(*args: Any, **kwargs: Any) -> Any:
        leased = await real(*args, **kwargs)  # committed: the job is RUNNING
        leasing.set()
        await asyncio.sleep(1.0)  # the caller goes away meanwhile
        return leased

    monkeypatch.setattr(store, "lease", slow_lease)
    call = asyncio.create_task(lease(server, lease=300))
    await asyncio.wait_for(leasing.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # back to QUEUED well before its 300 s lease ends, the attempt not charged
    await wait_for_state(server.jobs, job.id, QUEUED, within=10)
    [attempt] = await attempts(server, job.id)
    assert attempt.outcome == job_pb2.ATTEMPT_OUTCOME_LOST
    assert "LeaseJobs caller went away" in attempt.error


class _Context:
    """The servicer's view of a call whose caller cancelled it after the leases were taken
    and before the reply left (grpc calls the done callbacks at the call's end)."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def cancelled(self) -> bool:
        return True


async def test_leases_of_a_reply_that_never_left_go_back(server: Running) -> None:
    job = await enqueue(server)
    assert server.app.remote is not None
    service = WorkerService(server.app.remote, Limits(server.app.settings.max_payload_bytes))
    context = _Context()
    request = wpb.LeaseJobsRequest(worker_id="w1", lease_duration=seconds(300))
    reply = await service.LeaseJobs(request, context)  # type: ignore[arg-type]
    assert [held.job.id for held in reply.leases] == [job.id]
    for callback in context.callbacks:
        callback(context)
    await wait_for_state(server.jobs, job.id, QUEUED, within=10)
    [attempt] = await attempts(server, job.id)
    assert "LeaseJobs caller went away" in attempt.error


async def test_a_stopping_worker_does_not_wait_out_its_long_poll(server: Running) -> None:
    assert server.app.remote is not None
    waiting = server.app.remote.polls_waiting.next()
    worker = Worker(server.address, worker_id="idle", poll_wait=60.0)

    @worker.task("remote.idle")
    async def never(payload: dict[str, Any]) -> None:
        return None

    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(waiting, 10)  # its long poll found nothing and waits
    await asyncio.wait_for(worker.stop(30.0), 10)  # not the poll's 60 s, nor the grace
    await running
    job = await enqueue(server, task="remote.idle")
    assert (await lease(server, tasks=["remote.idle"]))[0].job.id == job.id
