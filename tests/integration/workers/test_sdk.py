"""The Python worker SDK against a real server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from jobwheel.client.worker import JobContext, JobFailed, Worker
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb

from tests.conftest import Running
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import attempts, enqueue


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        if not task.done():
            await worker.stop(1.0)
        await task


def make_worker(server: Running, **kw: Any) -> Worker:
    kw.setdefault("worker_id", "sdk-1")
    kw.setdefault("poll_wait", 5.0)
    return Worker(server.address, **kw)


async def test_async_and_sync_handlers_complete_jobs(server: Running) -> None:
    worker = make_worker(server)
    seen: list[tuple[str, int]] = []

    @worker.task("sdk.async")
    async def doubled(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        seen.append((ctx.job_id, ctx.attempt))
        return {"twice": payload["n"] * 2}

    @worker.task("sdk.sync")
    def shout(payload: dict[str, Any]) -> str:
        assert threading.current_thread() is not threading.main_thread()
        return str(payload["text"]).upper()

    async with running(worker):
        a = await enqueue(server, "sdk.async", payload={"n": 21})
        b = await enqueue(server, "sdk.sync", payload={"text": "hi"})
        done_a = await wait_for_state(server.jobs, a.id)
        done_b = await wait_for_state(server.jobs, b.id)
    assert done_a.state == job_pb2.JOB_STATE_COMPLETED
    assert done_a.result.struct_value["twice"] == 42
    assert done_b.result.string_value == "HI"
    assert seen == [(a.id, 1)]
    [attempt] = await attempts(server, a.id)
    assert attempt.worker_id == "sdk-1" and attempt.outcome == job_pb2.ATTEMPT_OUTCOME_SUCCEEDED
    assert worker.completed == 2


async def test_errors_fail_the_attempt(server: Running) -> None:
    worker = make_worker(server)

    @worker.task("sdk.broken")
    async def broken(payload: dict[str, Any]) -> None:
        if payload["permanent"]:
            raise JobFailed("bad input", retryable=False)
        raise KeyError("missing")

    async with running(worker):
        retried = await enqueue(server, "sdk.broken", payload={"permanent": False})
        final = await enqueue(server, "sdk.broken", payload={"permanent": True})
        r = await wait_for_state(server.jobs, retried.id, (job_pb2.JOB_STATE_RETRYING,))
        f = await wait_for_state(server.jobs, final.id)
    assert r.last_error == "KeyError: 'missing'"
    assert f.state == job_pb2.JOB_STATE_FAILED and f.last_error == "JobFailed: bad input"


async def test_cancel_reaches_the_handler_through_the_heartbeat(server: Running) -> None:
    worker = make_worker(server, lease_duration=0.6)
    started, stopped = asyncio.Event(), asyncio.Event()
    progress_sent = asyncio.Event()

    @worker.task("sdk.long")
    async def long(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        ctx.report_progress({"step": 1})
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    async with running(worker):
        job = await enqueue(server, "sdk.long")
        await asyncio.wait_for(started.wait(), 5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not progress_sent.is_set():
            got = (await server.jobs.GetJob(jpb.GetJobRequest(id=job.id))).job
            if "step" in got.progress and got.progress["step"] == 1:
                progress_sent.set()
            await asyncio.sleep(0.05)
        assert progress_sent.is_set(), "progress travels with the heartbeat"
        await server.jobs.CancelJob(jpb.CancelJobRequest(id=job.id, reason="stop it"))
        await asyncio.wait_for(stopped.wait(), 5)
    got = (await server.jobs.GetJob(jpb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_CANCELLED and got.cancel_reason == "stop it"


async def test_graceful_stop_finishes_or_releases_running_jobs(server: Running) -> None:
    worker = make_worker(server, concurrency=2)
    both_started = asyncio.Event()
    started: list[str] = []
    waits = {"quick": 0.3, "slow": 30.0}

    @worker.task("sdk.sleepy")
    async def sleepy(payload: dict[str, Any]) -> str:
        started.append(payload["kind"])
        if len(started) == 2:
            both_started.set()
        await asyncio.sleep(waits[payload["kind"]])
        return str(payload["kind"])

    task = asyncio.create_task(worker.run())
    quick = await enqueue(server, "sdk.sleepy", payload={"kind": "quick"})
    slow = await enqueue(server, "sdk.sleepy", payload={"kind": "slow"})
    await asyncio.wait_for(both_started.wait(), 5)
    began = time.monotonic()
    await worker.stop(1.0)
    await task
    assert time.monotonic() - began < 3
    finished = await wait_for_state(server.jobs, quick.id)
    assert finished.state == job_pb2.JOB_STATE_COMPLETED
    released = (await server.jobs.GetJob(jpb.GetJobRequest(id=slow.id))).job
    # given back: queued again at once, the attempt on record but not charged
    assert released.state == job_pb2.JOB_STATE_QUEUED
    assert released.last_error == "LostAttempt: released by the worker: the worker stopped"
    [attempt] = (
        await server.jobs.ListJobAttempts(jpb.ListJobAttemptsRequest(job_id=slow.id))
    ).attempts
    assert attempt.outcome == job_pb2.ATTEMPT_OUTCOME_LOST
