"""A job's timeout bounds a remote worker's attempt as it bounds the server's own: the upkeep
ends an attempt past it TIMED_OUT (within --recover-interval), retried per the job's policy,
however the worker heartbeats."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import running_server
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import attempts, enqueue, error_info, lease, seconds

TIMED_OUT = job_pb2.ATTEMPT_OUTCOME_TIMED_OUT


async def test_an_attempt_past_the_timeout_ends_timed_out_and_is_retried(db_url: str) -> None:
    async with running_server(db_url, recover_interval=0.2) as server:
        policy = job_pb2.RetryPolicy(max_attempts=2, initial_backoff=seconds(0.1))
        timed = await enqueue(server, timeout=seconds(1), retry_policy=policy)
        untimed = await enqueue(server)
        held = {h.job.id: h for h in await lease(server, "w1", max_jobs=2, lease=30)}
        beats = [
            wpb.HeartbeatJobRequest(job_id=job_id, epoch=h.epoch, worker_id="w1")
            for job_id, h in held.items()
        ]
        refused: dict[str, str] = {}
        for _ in range(12):  # 3 s of heartbeats: past the timeout and the upkeep after it
            await asyncio.sleep(0.25)
            for beat in beats:
                if beat.job_id in refused:
                    continue
                try:
                    await server.workers.HeartbeatJob(beat)
                except grpc.aio.AioRpcError as exc:
                    refused[beat.job_id] = error_info(exc).reason
        # the worker learns it on its next heartbeat; the job without a timeout runs on
        assert refused == {timed.id: "LEASE_NOT_HELD"}
        [first] = await attempts(server, timed.id)
        assert first.outcome == TIMED_OUT
        assert first.error == "TimeoutError: exceeded 1s"
        assert first.worker_id == "w1"
        [again] = await lease(server, "w2", wait=5)
        assert (again.job.id, again.job.attempt) == (timed.id, 2)
        assert [a.outcome for a in await attempts(server, untimed.id)] == [
            job_pb2.ATTEMPT_OUTCOME_RUNNING
        ]


async def test_the_last_attempt_past_the_timeout_fails_the_job(db_url: str) -> None:
    async with running_server(db_url, recover_interval=0.2) as server:
        one = job_pb2.RetryPolicy(max_attempts=1)
        job = await enqueue(server, timeout=seconds(0.5), retry_policy=one)
        [held] = await lease(server, "w1", lease=30)
        failed = await wait_for_state(server.jobs, job.id, (job_pb2.JOB_STATE_FAILED,), within=5)
        assert failed.last_error == "TimeoutError: exceeded 0.5s"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.workers.CompleteJob(
                wpb.CompleteJobRequest(job_id=job.id, epoch=held.epoch, worker_id="w1")
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (await server.jobs.GetJob(jpb.GetJobRequest(id=job.id))).job.state == (
            job_pb2.JOB_STATE_FAILED
        )
