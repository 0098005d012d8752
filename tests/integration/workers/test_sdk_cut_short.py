"""The worker SDK when its work is cut short: a stop without grace, its run task cancelled, a
handler raising CancelledError itself, a job leased again after its lease was lost. No job is
left RUNNING until its lease expires, and no attempt's end touches another's."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb

from tests.conftest import Running
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import enqueue
from tests.integration.workers.test_sdk import make_worker, running


async def get(server: Running, job_id: str) -> job_pb2.Job:
    return (await server.jobs.GetJob(jpb.GetJobRequest(id=job_id))).job


async def test_a_stop_without_grace_lets_an_outcome_on_its_way_through(server: Running) -> None:
    """A stop without grace lets through an outcome already on its way (its handler had
    returned): the job is stored as done, not left RUNNING (its report was cancelled, then
    sent on a closed channel, and the job ran again after its lease expired)."""
    job = await enqueue(server, "rv.quick")
    worker = make_worker(server, report_delay=1.0, lease_duration=60.0)
    finished = asyncio.Event()

    @worker.task("rv.quick")
    async def quick(payload: dict[str, Any]) -> str:
        finished.set()
        return "ok"

    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(finished.wait(), 10)
    await asyncio.sleep(0.05)  # the handler returned; its completion waits for neighbours
    await worker.stop(0)
    await task
    await asyncio.sleep(1.5)  # the flusher's delay has passed
    got = await get(server, job.id)
    assert got.state != job_pb2.JOB_STATE_RUNNING, "left RUNNING (leased) after the stop"


async def test_a_cancelled_error_the_handler_raises_is_its_failure(server: Running) -> None:
    """A CancelledError the handler raises itself (it awaited a future someone cancelled),
    not a cancel of its task, is the attempt's failure (it was taken for a lost lease:
    nothing reported, the job RUNNING until its lease expired)."""
    job = await enqueue(server, "rv.cancelled")
    worker = make_worker(server, lease_duration=60.0)
    done = asyncio.Event()

    @worker.task("rv.cancelled")
    async def inner(payload: dict[str, Any]) -> str:
        other = asyncio.get_running_loop().create_future()
        other.cancel()
        try:
            return await other
        finally:
            done.set()

    async with running(worker):
        await asyncio.wait_for(done.wait(), 10)
        # the failure is stored at once (its lease lasts a minute): retrying, or failed
        waiting = (job_pb2.JOB_STATE_RETRYING, job_pb2.JOB_STATE_FAILED)
        got = await wait_for_state(server.jobs, job.id, waiting, within=5)
    assert "CancelledError" in got.last_error, got.last_error


async def test_cancelling_the_run_task_gives_the_running_job_back(server: Running) -> None:
    """Cancelling the task running `worker.run()` is a stop without grace: the handler is
    cut short and its job given back (the handlers ran on, leaked, and their jobs stayed
    RUNNING until their leases expired)."""
    job = await enqueue(server, "rv.slow")
    worker = make_worker(server, lease_duration=60.0)
    began = asyncio.Event()
    cancelled = asyncio.Event()

    @worker.task("rv.slow")
    async def slow(payload: dict[str, Any]) -> str:
        began.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(began.wait(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    leaked = [r.task for r in worker._running.values() if r.task and not r.task.done()]
    got = await get(server, job.id)
    for t in leaked:
        t.cancel()
    assert not leaked, "handler task still running after the run task was cancelled"
    assert got.state != job_pb2.JOB_STATE_RUNNING


async def test_a_job_leased_again_after_its_lease_was_lost(server: Running) -> None:
    """Attempt 1's heartbeats are lost (a partition) and the same worker leases the job again
    while attempt 1 still runs: attempt 1 is cut short, and its end does not drop attempt 2,
    which keeps its lease and completes (attempt 1's end dropped attempt 2's heartbeats, and
    the job ended FAILED after four lost attempts)."""
    job = await enqueue(server, "rv.relost")
    worker = make_worker(server, lease_duration=0.9, poll_wait=1.0, report_delay=0.2)
    second = asyncio.Event()
    runs: list[int] = []
    real = worker._beat_all

    async def lossy(due: list[Any]) -> None:
        kept = [r for r in due if r.ctx.attempt != 1]
        if kept:
            await real(kept)

    worker._beat_all = lossy  # type: ignore[method-assign]

    @worker.task("rv.relost")
    async def relost(payload: dict[str, Any], ctx: Any) -> int:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.wait_for(second.wait(), 10)
            return 1
        second.set()
        await asyncio.sleep(3)  # > lease: kept alive by heartbeats
        return ctx.attempt

    async with running(worker):
        done = await wait_for_state(server.jobs, job.id, within=15)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert runs == [1, 2], f"ran as attempts {runs}"
