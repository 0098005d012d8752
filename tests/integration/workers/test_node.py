"""A Node.js worker and client (examples/node) against a real server.

Skipped when node or npm is missing, except under CI=true, where that fails the run.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb

from tests.acceptance.process import ROOT
from tests.conftest import Running, unavailable
from tests.integration.api.waiting import wait_for_state
from tests.integration.workers.helpers import attempts, enqueue

NODE_DIR = ROOT / "examples" / "node"
pytestmark = pytest.mark.slow


def node_ready() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        unavailable("node and npm are needed for the Node.js worker example")
    if not (NODE_DIR / "node_modules" / "@grpc" / "proto-loader").is_dir():
        # `make test` installs them once (a stamp target); this covers a bare `pytest`
        subprocess.run(
            [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            check=True,
            timeout=300,
            capture_output=True,
        )
    return node


async def node(node_bin: str, script: str, *args: str) -> str:
    """Runs a script to its end (callers bound it with asyncio.timeout); returns stdout."""
    proc = await asyncio.create_subprocess_exec(
        node_bin,
        str(NODE_DIR / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_node_worker_completes_jobs_enqueued_from_python_and_node(
    server: Running,
) -> None:
    node_bin = node_ready()
    job = await enqueue(server, "node.echo", payload={"from": "python", "n": 3})
    stream = server.jobs.WatchJobs(jpb.WatchJobsRequest(filter=job_pb2.JobFilter(ids=[job.id])))
    worker = asyncio.create_task(
        node(
            node_bin,
            "worker.js",
            "--address",
            server.address,
            "--task",
            "node.echo",
            "--worker-id",
            "node-test",
            "--max-jobs",
            "2",
        )
    )
    async with asyncio.timeout(20):
        async for resp in stream:
            if resp.HasField("event") and resp.event.job.state == job_pb2.JOB_STATE_COMPLETED:
                completed = resp.event.job
                break
    stream.cancel()
    result = completed.result.struct_value
    assert result["by"] == "node-test" and result["attempt"] == 1
    assert result["echo"]["from"] == "python" and result["echo"]["n"] == 3

    async with asyncio.timeout(20):
        printed = await node(
            node_bin,
            "enqueue.js",
            "node.echo",
            json.dumps({"from": "node"}),
            "--address",
            server.address,
        )
    from_node = json.loads(printed)
    assert from_node["state"] == "JOB_STATE_QUEUED"
    done = await wait_for_state(server.jobs, from_node["id"], within=20)
    assert done.state == job_pb2.JOB_STATE_COMPLETED
    assert done.result.struct_value["echo"]["from"] == "node"
    [attempt] = await attempts(server, from_node["id"])
    assert attempt.worker_id == "node-test"
    await asyncio.wait_for(worker, 20)  # it exits after its two jobs
