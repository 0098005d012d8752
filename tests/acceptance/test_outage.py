"""A PostgreSQL outage through a loopback TCP proxy that the test cuts (3 s) while 50
in-process jobs run (the PostgreSQL service itself is never touched).

While cut, every RPC answers UNAVAILABLE and health is NOT_SERVING (every service name);
afterwards health is SERVING again and every job ends COMPLETED with exactly one attempt on
record, which succeeded: results that could not be stored during the cut are stored after it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.server.app import SERVICE_NAMES
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

from tests.acceptance.process import ServerProcess
from tests.acceptance.tcp_proxy import TcpProxy
from tests.acceptance.test_crash_recovery import wait_count

pytestmark = pytest.mark.postgres
N = 50
# longer outages: JOBWHEEL_OUTAGE_SECONDS=15 pytest tests/acceptance/test_outage.py -s
CUT_SECONDS = float(os.environ.get("JOBWHEEL_OUTAGE_SECONDS", "3"))
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: grpc.aio.Channel) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    names = ("", *SERVICE_NAMES)
    replies = [await stub.Check(health_pb2.HealthCheckRequest(service=n)) for n in names]
    return {r.status for r in replies}


async def wait_health(channel: grpc.aio.Channel, status: int, within: float) -> float:
    start = time.monotonic()
    while await health_of(channel) != {status}:
        assert time.monotonic() - start < within, f"health not {status} after {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def rpc_codes(stub: job_service_pb2_grpc.JobServiceStub, job_id: str) -> set[str]:
    calls = [
        stub.GetJob(pb.GetJobRequest(id=job_id), timeout=10),
        stub.ListJobs(pb.ListJobsRequest(page_size=10), timeout=10),
        stub.EnqueueJob(pb.EnqueueJobRequest(task="test.noop"), timeout=10),
        stub.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id), timeout=10),
        stub.CancelJob(pb.CancelJobRequest(id=job_id), timeout=10),
        stub.ListQueues(pb.ListQueuesRequest(), timeout=10),
    ]
    codes = set()
    for call in calls:
        try:
            await call
            codes.add("OK")
        except grpc.aio.AioRpcError as err:
            codes.add(err.code().name)
    watch = stub.WatchJobs(pb.WatchJobsRequest(include_snapshot=True), timeout=10)
    try:
        async for _ in watch:
            pass
    except grpc.aio.AioRpcError as err:
        codes.add(err.code().name)
    return codes


async def test_a_cut_while_50_jobs_run(tmp_path: Path, proxied_url: tuple[str, TcpProxy]) -> None:
    url, proxy = proxied_url
    release = tmp_path / "release"
    log = tmp_path / "server.log"
    proc = ServerProcess(url, log, "--handlers", "tests.handlers", "--recover-interval", "1")
    await asyncio.to_thread(proc.start)  # the proxy runs on this loop meanwhile
    try:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            reqs = [pb.EnqueueJobRequest(task="test.wait_release") for _ in range(N)]
            for r in reqs:
                r.payload.update({"release": str(release)})
            resp = await stub.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
            ids = [r.job.id for r in resp.results]
            await wait_count(stub, job_pb2.JOB_STATE_RUNNING, N)
            assert await health_of(channel) == {SERVING}
            lines_before = len(log.read_text().splitlines())

            await proxy.cut()
            cut_at = time.monotonic()
            release.touch()  # every handler returns during the outage
            codes = await rpc_codes(stub, ids[0])
            assert codes == {"UNAVAILABLE"}, codes
            await wait_health(channel, NOT_SERVING, within=CUT_SECONDS)
            await asyncio.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
            await proxy.restore()

            back = await wait_health(channel, SERVING, within=15)
            await wait_count(stub, job_pb2.JOB_STATE_COMPLETED, N)
            settled = time.monotonic() - cut_at
            for job_id in ids:
                history = await stub.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))
                outcomes = [a.outcome for a in history.attempts]
                assert outcomes == [job_pb2.ATTEMPT_OUTCOME_SUCCEEDED], (job_id, history)
                assert history.successful_executions == 1
                job = (await stub.GetJob(pb.GetJobRequest(id=job_id))).job
                assert job.state == job_pb2.JOB_STATE_COMPLETED and job.attempt == 1
            # and the server goes on as before
            later = (await stub.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))).job.id
            await wait_count(stub, job_pb2.JOB_STATE_COMPLETED, N + 1)
            assert (await stub.GetJob(pb.GetJobRequest(id=later))).job.attempt == 1
        outage_lines = log.read_text().splitlines()[lines_before:]
        print(
            f"outage: {CUT_SECONDS:g}s cut, health SERVING {back:.1f}s after restore, "
            f"all {N} jobs COMPLETED {settled:.1f}s after the cut, "
            f"{len(outage_lines)} log lines"
        )
        # one line per kind of failure per interval, not one per failed call
        assert len(outage_lines) < 40, "\n".join(outage_lines)
        assert "Traceback" not in "\n".join(outage_lines)
    finally:
        proc.stop()
