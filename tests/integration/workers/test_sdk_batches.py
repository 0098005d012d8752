"""The worker SDK's batched path: many outcomes per call, and single calls to an older server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from jobwheel.client.worker import Worker
from jobwheel.client.worker_batches import Batches
from jobwheel.v1 import job_pb2, worker_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import enqueue, lease
from tests.integration.workers.test_sdk import make_worker, running

JOBS = 300


async def test_many_short_jobs_share_report_calls(server: Running) -> None:
    requests = [jpb.EnqueueJobRequest(task="sdk.quick") for _ in range(JOBS)]
    await server.jobs.BatchEnqueueJobs(jpb.BatchEnqueueJobsRequest(jobs=requests))
    worker = make_worker(server)

    ran = 0
    all_ran = asyncio.Event()

    @worker.task("sdk.quick")
    async def quick(payload: dict[str, Any]) -> int:
        nonlocal ran
        ran += 1
        if ran == JOBS:
            all_ran.set()
        return 1

    async with running(worker):
        await asyncio.wait_for(all_ran.wait(), 60)
    # stopping waited for the outcomes held to be reported
    assert worker._batches is not None
    assert worker._batches.calls < JOBS // 2, "outcomes went out one call per job"
    assert worker.completed == JOBS and worker.failed == 0


class _OldWorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
    """A server of the first contract: the single-job RPCs only (the batch RPCs answer
    UNIMPLEMENTED), forwarded to the real server."""

    def __init__(self, real: worker_service_pb2_grpc.WorkerServiceStub) -> None:
        self.real = real
        self.calls: list[str] = []

    async def LeaseJobs(self, request: Any, context: Any) -> Any:
        return await self.real.LeaseJobs(request, timeout=context.time_remaining())

    async def HeartbeatJob(self, request: Any, context: Any) -> Any:
        self.calls.append("HeartbeatJob")
        return await self.real.HeartbeatJob(request)

    async def CompleteJob(self, request: Any, context: Any) -> Any:
        self.calls.append("CompleteJob")
        return await self.real.CompleteJob(request)

    async def FailJob(self, request: Any, context: Any) -> Any:
        self.calls.append("FailJob")
        return await self.real.FailJob(request)


async def old_server(server: Running) -> AsyncIterator[tuple[str, _OldWorkerService]]:
    old = _OldWorkerService(server.workers)
    proxy = grpc.aio.server()
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(old, proxy)
    port = proxy.add_insecure_port("127.0.0.1:0")
    await proxy.start()
    try:
        yield f"127.0.0.1:{port}", old
    finally:
        await proxy.stop(None)


async def test_an_older_server_gets_single_reports(server: Running) -> None:
    ok = await enqueue(server, "sdk.old", payload={"fail": False})
    bad = await enqueue(server, "sdk.old", payload={"fail": True})
    async for address, old in old_server(server):
        worker = Worker(address, worker_id="sdk-old", poll_wait=1.0, lease_duration=0.9)

        @worker.task("sdk.old")
        async def maybe(payload: dict[str, Any]) -> str:
            if payload["fail"]:
                raise ValueError("asked to")
            await asyncio.sleep(0.5)  # long enough for a heartbeat (every lease/3)
            return "done"

        async with running(worker):
            done = await wait_for_state(server.jobs, ok.id)
            failed = await wait_for_state(server.jobs, bad.id, (job_pb2.JOB_STATE_RETRYING,))
        assert done.state == job_pb2.JOB_STATE_COMPLETED and done.result.string_value == "done"
        assert failed.last_error == "ValueError: asked to"
        assert worker._batches is not None and not worker._batches.batched
        assert {"CompleteJob", "FailJob", "HeartbeatJob"} <= set(old.calls)


async def test_a_stop_against_an_older_server_reports_a_retryable_failure(
    server: Running,
) -> None:
    slow = await enqueue(server, "sdk.slow")
    began = asyncio.Event()
    async for address, old in old_server(server):
        worker = Worker(address, worker_id="sdk-old", poll_wait=1.0)

        @worker.task("sdk.slow")
        async def sleepy(payload: dict[str, Any]) -> str:
            began.set()
            await asyncio.sleep(30)
            return "never"

        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(began.wait(), 5)
        await worker.stop(0.1)
        await task
        # no ReleaseJobs there: the attempt is reported failed and retryable instead
        stopped = await wait_for_state(server.jobs, slow.id, (job_pb2.JOB_STATE_RETRYING,))
        assert stopped.last_error.startswith("WorkerStopped:")
        assert worker._batches is not None and not worker._batches.releases
        assert "FailJob" in old.calls


async def test_a_report_cancelled_while_batched_leaves_its_neighbours_reported(
    server: Running,
) -> None:
    first, second = await enqueue(server), await enqueue(server)
    held = {h.job.id: h for h in await lease(server, "w1", max_jobs=2)}
    batches = Batches(server.workers, "w1", max_batch=10, delay=1.0, give_up=5.0)
    items = [wpb.JobCompletion(job_id=j.id, epoch=held[j.id].epoch) for j in (first, second)]
    cancelled = asyncio.create_task(batches.complete(items[0]))
    kept = asyncio.create_task(batches.complete(items[1]))
    await asyncio.sleep(0.05)  # both wait in one batch for neighbours
    cancelled.cancel()
    assert (await kept).ok
    assert cancelled.cancelled()
    # the cancelled item's report went out with its neighbour's: both jobs are done
    for job in (first, second):
        done = await wait_for_state(server.jobs, job.id)
        assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert batches.calls == 1
