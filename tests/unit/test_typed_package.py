"""`mypy --strict` in a user's project passes over jobwheel.client and jobwheel.v1: the
packages carry py.typed, the messages .pyi stubs (grpcio-tools) and the gRPC stubs .pyi
stubs (mypy-protobuf), so a mistake in user code is found, not hidden behind Any."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

USER_CODE = """
import grpc
from jobwheel.client import AsyncClient, Client, NotFound
from jobwheel.client.worker import JobContext, Worker
from jobwheel.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc


def sync_use() -> str:
    with Client("127.0.0.1:50051") as jw:
        job: job_pb2.Job = jw.enqueue_job("t", payload={"a": 1}).job
        return job.id


async def async_use() -> int:
    async with AsyncClient() as jw:
        try:
            await jw.get_job("x")
        except NotFound as err:
            print(err.message)
        return len([j async for j in jw.iter_jobs(states=["failed"])])


def raw_stub(channel: grpc.Channel) -> job_service_pb2.GetJobResponse:
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    # grpc's own types come from types-grpcio, which this test leaves out
    resp: job_service_pb2.GetJobResponse = stub.GetJob(job_service_pb2.GetJobRequest(id="x"))
    return resp


worker = Worker(queues=["q"])


@worker.task("t")
async def handle(payload: dict[str, object], ctx: JobContext) -> dict[str, str]:
    return {"id": ctx.job_id}
"""

CONFIG = """
[mypy]
strict = True
[mypy-grpc.*,grpc_status.*,google.rpc.*]
ignore_missing_imports = True
"""


def mypy(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "user.py").write_text(code)
    (tmp_path / "mypy.ini").write_text(CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"MYPYPATH": str(ROOT / "client"), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.slow
def test_strict_user_code_passes_and_mistakes_are_found(tmp_path: Path) -> None:
    ok = mypy(tmp_path, USER_CODE)
    assert ok.returncode == 0, ok.stdout
    wrong = USER_CODE.replace("return job.id", "return job.idd").replace(
        'GetJobRequest(id="x")', "GetJobRequest(id=5)"
    )
    bad = mypy(tmp_path, wrong)
    assert bad.returncode == 1
    assert '"Job" has no attribute "idd"' in bad.stdout
    assert 'Argument "id" to "GetJobRequest" has incompatible type "int"' in bad.stdout
    assert (ROOT / "client/jobwheel/client/py.typed").exists()
    assert (ROOT / "client/jobwheel/v1/py.typed").exists()
