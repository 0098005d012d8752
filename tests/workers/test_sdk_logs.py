"""The worker SDK says what it does: where it connects and what it serves when it starts,
and how many running jobs it drains on SIGTERM, so a stopping worker never looks hung."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running


async def test_start_and_sigterm_are_logged(server: Running, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.workers.worker_main", server.address, "w1", "30",
        str(tmp_path), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        payload = {"sleep": {"w1": 1.0}}
        req = pb.EnqueueJobRequest(task="fence.work")
        req.payload.update(payload)
        job = (await server.jobs.EnqueueJob(req)).job
        marker = tmp_path / "w1.started"
        for _ in range(300):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the worker never started the job"
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert (
        f"worker w1: server {server.address}, queues (all), tasks fence.work, concurrency 1" in log
    )
    assert "SIGTERM: stopping; draining 1 running job(s), 30s grace" in log
    assert log.index("draining") < log.index("worker w1 stopped")
    got = await server.jobs.GetJob(pb.GetJobRequest(id=job.id))
    assert got.job.state == job_pb2.JOB_STATE_COMPLETED  # drained, not abandoned
