"""kill -9 while 200 in-process jobs run: after a restart every one completes, and the
interrupted attempt is on record."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

from tests.acceptance.process import ServerProcess

N = 200


async def count(stub: job_service_pb2_grpc.JobServiceStub, state: int) -> int:
    total, token = 0, ""
    while True:
        resp = await stub.ListJobs(
            pb.ListJobsRequest(
                filter=job_pb2.JobFilter(states=[state]), page_size=1000, page_token=token
            )
        )
        total += len(resp.jobs)
        token = resp.next_page_token
        if not token:
            return total


async def wait_count(stub: job_service_pb2_grpc.JobServiceStub, state: int, n: int) -> None:
    deadline = time.monotonic() + 30
    while (got := await count(stub, state)) < n:
        assert time.monotonic() < deadline, f"only {got} of {n} jobs reached {state}"
        await asyncio.sleep(0.1)


async def test_kill_9_with_200_running_jobs_loses_nothing(tmp_path: Path) -> None:
    release = tmp_path / "release"
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'j.db'}", tmp_path / "server.log", "--handlers", "tests.handlers"
    )
    proc.start()
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            payload = {"release": str(release)}
            reqs = [pb.EnqueueJobRequest(task="test.wait_release") for _ in range(N)]
            for r in reqs:
                r.payload.update(payload)
            resp = await stub.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
            ids = [r.job.id for r in resp.results]
            await wait_count(stub, job_pb2.JOB_STATE_RUNNING, N)
        proc.kill()
        release.touch()
        proc.start()
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            await wait_count(stub, job_pb2.JOB_STATE_COMPLETED, N)
            for job_id in ids:
                history = await stub.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
                outcomes = [a.outcome for a in history.attempts]
                assert outcomes == [job_pb2.ATTEMPT_OUTCOME_LOST, job_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
                assert history.attempts[0].error.startswith("LostAttempt")
                assert history.attempts[0].HasField("end_time")
    finally:
        proc.stop()
