"""Waiting for a job to reach a state (tests poll GetJob: the server is real)."""

from __future__ import annotations

import asyncio
import time

from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

TERMINAL = (job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)


async def wait_for_state(
    stub: job_service_pb2_grpc.JobServiceStub,
    job_id: str,
    states: tuple[int, ...] = TERMINAL,
    within: float = 15.0,
) -> job_pb2.Job:
    deadline = time.monotonic() + within
    while True:
        job = (await stub.GetJob(pb.GetJobRequest(id=job_id))).job
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job_pb2.JobState.Name(job.state)}")
        await asyncio.sleep(0.02)
