"""The worker SDK leases ahead: the next LeaseJobs goes out while the last one's jobs still
wait, and a stop still gives back every job leased ahead."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from jobwheel.client.worker import Worker
from jobwheel.v1 import job_pb2, worker_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as jpb

from tests.conftest import Running
from tests.integration.workers.test_sdk import make_worker, running

JOBS = 3000
AHEAD_JOBS = 500  # enough for the prefetch to grow past one lease call
HOLD = 0.2  # seconds a lease reply waits, at most, for the next request


class _SlowLeases(worker_service_pb2_grpc.WorkerServiceServicer):
    """Forwards to the real server; holds each LeaseJobs reply until the next LeaseJobs
    request arrives (or HOLD seconds pass), so a worker leasing one call at a time shows
    one call out, and one leasing ahead shows two."""

    def __init__(self, real: worker_service_pb2_grpc.WorkerServiceStub) -> None:
        self.real = real
        self.out = 0
        self.most_out = 0
        self.arrived = asyncio.Event()

    async def LeaseJobs(self, request: Any, context: Any) -> Any:
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        self.arrived.set()
        self.arrived = asyncio.Event()
        try:
            reply = await self.real.LeaseJobs(request, timeout=context.time_remaining())
            if reply.leases:
                next_request = self.arrived
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(next_request.wait(), HOLD)
            return reply
        finally:
            self.out -= 1

    async def CompleteJobs(self, request: Any, context: Any) -> Any:
        return await self.real.CompleteJobs(request)

    async def FailJobs(self, request: Any, context: Any) -> Any:
        return await self.real.FailJobs(request)

    async def ReleaseJobs(self, request: Any, context: Any) -> Any:
        return await self.real.ReleaseJobs(request)

    async def HeartbeatJobs(self, request: Any, context: Any) -> Any:
        return await self.real.HeartbeatJobs(request)


@contextlib.asynccontextmanager
async def slow_leases(server: Running) -> AsyncIterator[tuple[str, _SlowLeases]]:
    proxy_service = _SlowLeases(server.workers)
    proxy = grpc.aio.server()
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(proxy_service, proxy)
    port = proxy.add_insecure_port("127.0.0.1:0")
    await proxy.start()
    try:
        yield f"127.0.0.1:{port}", proxy_service
    finally:
        await proxy.stop(None)


async def _enqueue(server: Running, task: str, n: int) -> None:
    for start in range(0, n, 1000):
        requests = [jpb.EnqueueJobRequest(task=task) for _ in range(min(1000, n - start))]
        await server.jobs.BatchEnqueueJobs(jpb.BatchEnqueueJobsRequest(jobs=requests))


async def _states(server: Running) -> dict[int, int]:
    counts: dict[int, int] = {}
    token = ""
    while True:
        reply = await server.jobs.ListJobs(jpb.ListJobsRequest(page_size=1000, page_token=token))
        for job in reply.jobs:
            counts[job.state] = counts.get(job.state, 0) + 1
        token = reply.next_page_token
        if not token:
            return counts


async def test_the_next_lease_goes_out_before_the_last_ones_jobs_ran(server: Running) -> None:
    await _enqueue(server, "sdk.ahead", AHEAD_JOBS)
    async with slow_leases(server) as (address, proxy):
        worker = Worker(address, worker_id="sdk-ahead", poll_wait=5.0)
        ran = 0
        done = asyncio.Event()

        @worker.task("sdk.ahead")
        async def quick(payload: dict[str, Any]) -> None:
            nonlocal ran
            ran += 1
            if ran == AHEAD_JOBS:
                done.set()

        async with running(worker):
            await asyncio.wait_for(done.wait(), 120)
        # a reply held until the next request came: the worker asked again while it waited
        assert proxy.most_out >= 2
    assert (await _states(server)) == {job_pb2.JOB_STATE_COMPLETED: AHEAD_JOBS}


async def test_a_stop_gives_back_every_job_leased_ahead(server: Running) -> None:
    await _enqueue(server, "sdk.held", JOBS)
    worker = make_worker(server)
    ran = 0
    gate = asyncio.Event()  # never set: jobs after the first ones hang until the stop
    hanging = asyncio.Event()

    @worker.task("sdk.held")
    async def held(payload: dict[str, Any]) -> None:
        nonlocal ran
        ran += 1
        if ran > 500:
            hanging.set()
            await gate.wait()

    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(hanging.wait(), 60)
    await asyncio.sleep(0.2)  # leases ahead come back meanwhile
    await worker.stop(2.0)
    await task
    states = await _states(server)
    # nothing held RUNNING: every job is done or queued again
    assert set(states) <= {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_QUEUED}
    assert states.get(job_pb2.JOB_STATE_COMPLETED, 0) == worker.completed
    assert sum(states.values()) == JOBS
