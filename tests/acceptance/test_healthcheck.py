"""The image's health check asks the address in JOBWHEEL_LISTEN (not a fixed port)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from jobwheel.server.healthcheck import target

from tests.acceptance.process import ServerProcess
from tests.ports import refused_port


def check(listen: str) -> int:
    env = {**os.environ, "JOBWHEEL_LISTEN": listen}
    cmd = [sys.executable, "-m", "jobwheel.server.healthcheck"]
    return subprocess.run(cmd, env=env, timeout=30, check=False).returncode


@pytest.mark.parametrize(
    ("listen", "asked"),
    [
        ("0.0.0.0:6000", "127.0.0.1:6000"),
        ("[::]:6000", "[::1]:6000"),
        ("10.1.2.3:7000", "10.1.2.3:7000"),
        ("localhost:1", "localhost:1"),
    ],
)
def test_target(listen: str, asked: str) -> None:
    assert target(listen) == asked


def test_health_check_follows_jobwheel_listen(server_process: ServerProcess) -> None:
    assert check(f"0.0.0.0:{server_process.port}") == 0
    assert check(server_process.address) == 0
    with refused_port() as nobody:
        assert check(f"127.0.0.1:{nobody}") == 1
    server_process.terminate()
    assert check(server_process.address) == 1
