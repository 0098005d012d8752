"""The base install is the client side: a fresh virtual environment with `pip install <repo>`
(the working tree, with its base dependencies; pip may use its local cache) imports the
client, the worker SDK and the stubs, and runs the CLI against a real server, while none
of the server's dependencies is there."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from tests.acceptance.process import ROOT, ServerProcess

SERVER_ONLY = ("sqlalchemy", "aiosqlite", "asyncpg", "croniter", "httpx", "grpc_health")

CHECK = f"""
import importlib.util, json, sys
import jobwheel.client, jobwheel.client.worker, jobwheel.client.cli
from jobwheel.v1 import job_pb2, job_service_pb2_grpc, worker_service_pb2_grpc
from pathlib import Path
present = [m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m) is not None]
typed = [
    (Path(p.__file__).parent / "py.typed").exists()
    for p in (jobwheel.client, __import__("jobwheel.v1", fromlist=["_"]))
]
print(json.dumps({{"server_modules": present, "typed": typed}}))
"""


@pytest.mark.slow
def test_client_only_install(tmp_path: Path, server_process: ServerProcess) -> None:
    env_dir = tmp_path / "client-venv"
    venv.create(env_dir, with_pip=True)
    py, bin_dir = env_dir / "bin" / "python", env_dir / "bin"

    def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
            cwd=tmp_path,  # not the repository: nothing is imported from the checkout
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(Path.home())},
        )

    run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", ROOT)

    report = json.loads(run(py, "-c", CHECK).stdout)
    assert report == {"server_modules": [], "typed": [True, True]}

    assert run(bin_dir / "jobwheel", "--version").stdout.strip() == "jobwheel 0.1.0"
    address = server_process.address
    made = run(bin_dir / "jobwheel", "--server", address, "enqueue", "nightly", "--in", "1h",
               "-o", "json")  # fmt: skip
    job = json.loads(made.stdout)["job"]
    got = run(bin_dir / "jobwheel", "--server", address, "get", job["id"][:18])
    assert f"id:         {job['id']}" in got.stdout and "SCHEDULED" in got.stdout

    server = run(bin_dir / "jobwheel-server", check=False)
    assert server.returncode == 1
    assert "the server needs its extra: pip install 'jobwheel[server]'" in server.stderr
