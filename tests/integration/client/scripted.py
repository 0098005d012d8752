"""Scripted JobServices for the client's coalescing tests: they record each call and hold its
replies until a test lets them go. `Scripted` runs on the test's event loop (served on port 0
by conftest.py's `scripted`); `HeldReplies` on a thread pool, for tests whose main thread
blocks in a call."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from typing import Any

import grpc
from jobwheel.client import AsyncClient, Client, coalescing, coalescing_threads
from jobwheel.client.coalescing import MAX_IN_FLIGHT
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb


class Scripted(job_service_pb2_grpc.JobServiceServicer):
    """Records each call's requests and deadline; answers EnqueueJob once `gate` is set and
    BatchEnqueueJobs once `batch_gate` is (with `batch_status`, when set, as its error).
    A call holding a job whose payload n is in `bad` is refused (INVALID_ARGUMENT naming
    them); with `jitter` set, each answer waits a few random milliseconds first."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.batch_gate = asyncio.Event()
        self.batch_status: grpc.StatusCode | None = None
        self.bad: set[int] = set()
        self.jitter: random.Random | None = None
        self.active = 0  # calls not yet answered
        self.calls: list[tuple[str, list[int], float | None]] = []

    def open(self) -> None:
        self.gate.set()
        self.batch_gate.set()

    def seen(self) -> list[tuple[str, list[int]]]:
        """Each call's method and payload numbers, in order."""
        return [(method, numbers) for method, numbers, _ in self.calls]

    async def _hold(
        self,
        method: str,
        requests: list[pb.EnqueueJobRequest],
        context: Any,
        gate: asyncio.Event,
        status: grpc.StatusCode | None = None,
    ) -> None:
        """Records the call, waits for `gate`, then refuses it as scripted."""
        numbers = [int(r.payload["n"]) for r in requests]
        self.calls.append((method, numbers, context.time_remaining()))
        self.active += 1
        try:
            await gate.wait()
            if self.jitter is not None:
                await asyncio.sleep(self.jitter.random() * 0.004)
        finally:
            self.active -= 1
        if status is not None:
            await context.abort(status, "database unreachable")
        bad = [n for n in numbers if n in self.bad]
        if bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"jobs {bad} are bad")

    async def EnqueueJob(self, request: pb.EnqueueJobRequest, context: Any) -> Any:
        await self._hold("EnqueueJob", [request], context, self.gate)
        return pb.EnqueueJobResponse(job=job_of(request))

    async def BatchEnqueueJobs(self, request: pb.BatchEnqueueJobsRequest, context: Any) -> Any:
        jobs = list(request.jobs)
        await self._hold("BatchEnqueueJobs", jobs, context, self.batch_gate, self.batch_status)
        return pb.BatchEnqueueJobsResponse(
            results=[pb.EnqueueJobResponse(job=job_of(r)) for r in request.jobs]
        )


class HeldReplies(job_service_pb2_grpc.JobServiceServicer):
    """Scripted's counterpart on a thread pool: records each call's payload numbers; answers
    EnqueueJob once `gate` is set and BatchEnqueueJobs once `batch_gate` is."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batch_gate = threading.Event()
        self.calls: list[tuple[str, list[int]]] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        self.gate.set()
        self.batch_gate.set()

    def _seen(self, method: str, requests: list[pb.EnqueueJobRequest]) -> None:
        with self._lock:
            self.calls.append((method, [int(r.payload["n"]) for r in requests]))

    def EnqueueJob(self, request: pb.EnqueueJobRequest, context: Any) -> Any:
        self._seen("EnqueueJob", [request])
        self.gate.wait(30)
        return pb.EnqueueJobResponse(job=job_of(request))

    def BatchEnqueueJobs(self, request: pb.BatchEnqueueJobsRequest, context: Any) -> Any:
        self._seen("BatchEnqueueJobs", list(request.jobs))
        self.batch_gate.wait(30)
        return pb.BatchEnqueueJobsResponse(
            results=[pb.EnqueueJobResponse(job=job_of(r)) for r in request.jobs]
        )


def job_of(request: pb.EnqueueJobRequest) -> job_pb2.Job:
    job = job_pb2.Job(id=f"job-{int(request.payload['n'])}", task=request.task)
    job.payload.CopyFrom(request.payload)
    return job


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def enqueue(client: AsyncClient, n: int) -> asyncio.Task[pb.EnqueueJobResponse]:
    """An enqueue_job of a job with payload n, in a task of its own."""
    return asyncio.create_task(client.enqueue_job("test.noop", payload={"n": n}))


async def places_taken(
    client: AsyncClient, service: Scripted
) -> list[asyncio.Task[pb.EnqueueJobResponse]]:
    """MAX_IN_FLIGHT calls (n = 0, 1, ...), each alone (made once the server holds the one
    before): calls made after them wait."""
    seen = len(service.calls)
    tasks: list[asyncio.Task[pb.EnqueueJobResponse]] = []
    for n in range(MAX_IN_FLIGHT):
        tasks.append(enqueue(client, n))
        await until(lambda: len(service.calls) == seen + len(tasks))
    return tasks


def aio_coalescer(client: AsyncClient) -> coalescing.EnqueueCoalescer:
    """The AsyncClient's enqueue coalescer (its state, for the tests to look at)."""
    assert isinstance(client._enqueues, coalescing.EnqueueCoalescer)
    return client._enqueues


def thread_coalescer(client: Client) -> coalescing_threads.EnqueueCoalescer:
    """The blocking Client's enqueue coalescer."""
    assert isinstance(client._enqueues, coalescing_threads.EnqueueCoalescer)
    return client._enqueues
