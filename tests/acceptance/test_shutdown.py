"""Graceful stops: a released attempt keeps the job's retry budget, watch streams end at once
with UNAVAILABLE, and a stop with a running job finishes well inside Docker's 10 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

from tests.acceptance.process import ServerProcess

LOST = job_pb2.ATTEMPT_OUTCOME_LOST
FAILED = job_pb2.ATTEMPT_OUTCOME_FAILED


async def job_in(address: str, job_id: str, state: int, within: float = 20.0) -> job_pb2.Job:
    deadline = time.monotonic() + within
    async with grpc.aio.insecure_channel(address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        while True:
            job = (await stub.GetJob(pb.GetJobRequest(id=job_id))).job
            if job.state == state:
                return job
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.05)


async def test_three_restarts_during_a_long_job_keep_its_retry_budget(tmp_path: Path) -> None:
    release = tmp_path / "release"
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'j.db'}",
        tmp_path / "server.log",
        "--handlers",
        "tests.handlers",
        "--grace-period",
        "0.2",
    ).start()
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            req = pb.EnqueueJobRequest(
                task="test.wait_then_fail",
                retry_policy=job_pb2.RetryPolicy(
                    max_attempts=4,
                    initial_backoff=Duration(nanos=10_000_000),
                    max_backoff=Duration(nanos=10_000_000),
                ),
            )
            req.payload.update({"release": str(release)})
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            job_id = (await stub.EnqueueJob(req)).job.id
        for deploy in range(3):
            running = await job_in(proc.address, job_id, job_pb2.JOB_STATE_RUNNING)
            assert running.attempt == deploy + 1
            assert proc.terminate() == 0  # SIGTERM: the grace period ends, the attempt is released
            proc.start()
        await job_in(proc.address, job_id, job_pb2.JOB_STATE_RUNNING)
        release.touch()
        failed = await job_in(proc.address, job_id, job_pb2.JOB_STATE_FAILED)
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            history = await stub.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
        # every release on record, and still all four tries
        assert [a.outcome for a in history.attempts] == [LOST] * 3 + [FAILED] * 4
        assert all("server stopped" in a.error for a in history.attempts[:3])
        assert failed.attempt == 7
    finally:
        proc.stop()


async def test_stop_ends_watch_streams_at_once_with_unavailable(tmp_path: Path) -> None:
    release = tmp_path / "release"  # never created: the job runs through the whole grace
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'j.db'}", tmp_path / "server.log", "--handlers", "tests.handlers"
    ).start()  # the default grace period
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            req = pb.EnqueueJobRequest(task="test.wait_release")
            req.payload.update({"release": str(release)})
            job_id = (await stub.EnqueueJob(req)).job.id
            await job_in(proc.address, job_id, job_pb2.JOB_STATE_RUNNING)
            streams = [stub.WatchJobs(pb.WatchJobsRequest(include_snapshot=True)) for _ in range(5)]
            for stream in streams:  # each is open: its snapshot arrived
                while not (await stream.read()).HasField("snapshot_end"):
                    pass
            start = time.monotonic()
            stopping = asyncio.create_task(asyncio.to_thread(proc.terminate))
            for stream in streams:
                try:
                    while await stream.read() is not grpc.aio.EOF:
                        pass
                except grpc.aio.AioRpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                else:
                    raise AssertionError("a watch stream ended without a status")
            ended = time.monotonic() - start
            assert await stopping == 0
            stopped = time.monotonic() - start
        print(
            f"watch streams ended {ended:.2f}s after SIGTERM; the server stopped in {stopped:.1f}s"
        )
        assert ended < 2.0  # at once, not after the grace period
        assert stopped < 8.0  # well inside Docker's 10 s before SIGKILL
        proc.start()
        job = await job_in(proc.address, job_id, job_pb2.JOB_STATE_RUNNING)
        assert job.attempt == 2  # released at the stop, running again
    finally:
        proc.stop()
