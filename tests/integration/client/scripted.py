"""A scripted JobService for the client's coalescing tests: it records each call and holds its
replies until a test lets them go (served on port 0 by conftest.py's `scripted`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb


class Scripted(job_service_pb2_grpc.JobServiceServicer):
    """Records each call's requests and deadline; answers EnqueueJob once `gate` is set and
    BatchEnqueueJobs once `batch_gate` is (with `batch_status`, when set, as its error)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.batch_gate = asyncio.Event()
        self.batch_status: grpc.StatusCode | None = None
        self.calls: list[tuple[str, list[int], float | None]] = []

    def open(self) -> None:
        self.gate.set()
        self.batch_gate.set()

    def _seen(self, method: str, requests: list[pb.EnqueueJobRequest], context: Any) -> None:
        numbers = [int(r.payload["n"]) for r in requests]
        self.calls.append((method, numbers, context.time_remaining()))

    async def EnqueueJob(self, request: pb.EnqueueJobRequest, context: Any) -> Any:
        self._seen("EnqueueJob", [request], context)
        await self.gate.wait()
        return pb.EnqueueJobResponse(job=job_of(request))

    async def BatchEnqueueJobs(self, request: pb.BatchEnqueueJobsRequest, context: Any) -> Any:
        self._seen("BatchEnqueueJobs", list(request.jobs), context)
        await self.batch_gate.wait()
        if self.batch_status is not None:
            await context.abort(self.batch_status, "database unreachable")
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
