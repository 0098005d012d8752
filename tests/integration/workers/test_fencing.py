"""Real worker processes that hang (SIGSTOP) or die (SIGKILL) while holding a lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from jobwheel.v1 import job_pb2
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.acceptance.process import ROOT
from tests.conftest import Running
from tests.integration.api.waiting import eventually, wait_for_state
from tests.integration.workers.helpers import attempts, enqueue, error_info

pytestmark = pytest.mark.slow


@contextmanager
def worker_process(
    server: Running, worker_id: str, lease: float, tmp: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp / f"{worker_id}.log").open("ab")
    args = [server.address, worker_id, str(lease), str(tmp)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.workers.worker_main", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot die until resumed
            proc.kill()
        proc.wait(10)
        log.close()


async def test_a_paused_worker_cannot_complete_a_job_taken_over(
    server: Running, tmp_path: Path
) -> None:
    job = await enqueue(server, "fence.work", payload={"sleep": {"A": 2.0, "B": 1.5}})
    with worker_process(server, "A", 1.0, tmp_path) as a:
        await eventually((tmp_path / "A.started").exists, "worker A to start the job")
        a.send_signal(signal.SIGSTOP)
        # the lease runs out, upkeep re-queues the job and records the lost attempt
        queued = await wait_for_state(server.jobs, job.id, (job_pb2.JOB_STATE_QUEUED,))
        assert queued.attempt == 1
        with worker_process(server, "B", 5.0, tmp_path):
            await eventually((tmp_path / "B.started").exists, "worker B to take the job over")
            a.send_signal(signal.SIGCONT)
            a_log = tmp_path / "A.log"
            await eventually(
                lambda: "FAILED_PRECONDITION" in a_log.read_text(), "worker A to be refused"
            )
            done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert done.result.struct_value["by"] == "B" and done.attempt == 2
    history = await attempts(server, job.id)
    assert [(h.number, h.worker_id, h.outcome) for h in history] == [
        (1, "A", job_pb2.ATTEMPT_OUTCOME_LOST),
        (2, "B", job_pb2.ATTEMPT_OUTCOME_SUCCEEDED),
    ]
    # what A would have said, said now: refused, naming the current epoch
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job.id, epoch=1, worker_id="A")
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).metadata["current_epoch"] == "2"


async def test_a_killed_worker_s_job_runs_again(server: Running, tmp_path: Path) -> None:
    job = await enqueue(server, "fence.work", payload={"sleep": {"A": 30.0, "B": 0.0}})
    with worker_process(server, "A", 1.0, tmp_path) as a:
        await eventually((tmp_path / "A.started").exists, "worker A to start the job")
        a.kill()
        a.wait(10)
    with worker_process(server, "B", 5.0, tmp_path):
        done = await wait_for_state(server.jobs, job.id)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert done.result.struct_value["by"] == "B"
    assert done.last_error.startswith("LostAttempt:")
    history = await attempts(server, job.id)
    assert [(h.worker_id, h.outcome) for h in history] == [
        ("A", job_pb2.ATTEMPT_OUTCOME_LOST),
        ("B", job_pb2.ATTEMPT_OUTCOME_SUCCEEDED),
    ]
    assert history[0].error.startswith("LostAttempt:")
