"""The README's grpcurl examples, run as printed against a real server subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.acceptance.process import BIN, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
README_ADDRESS = "127.0.0.1:50051"


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- grpcurl-examples")
    return re.findall(r"```sh\n(.*?)```", text[start:], re.S)


def run_sh(script: str, address: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(README_ADDRESS, address)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_readme_grpcurl_examples_work_as_printed(server_process: ServerProcess) -> None:
    examples = readme_blocks()[0]
    result = run_sh(examples, server_process.address)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for service in (
        "jobwheel.v1.JobService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        assert service in out
    assert "rpc EnqueueJob" in out
    assert '"state": "JOB_STATE_SCHEDULED"' in out
    assert '"status": "SERVING"' in out
    # the filtered list holds exactly the billing job
    listed, _ = json.JSONDecoder().raw_decode(out[out.index('{\n  "jobs"') :])
    assert [j["task"] for j in listed["jobs"]] == ["send_report"]


def test_readme_bad_input_example_names_the_fields(server_process: ServerProcess) -> None:
    bad = readme_blocks()[1]
    result = run_sh(bad, server_process.address)
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert '"field":"task"' in result.stderr and '"field":"schedule.cron"' in result.stderr
