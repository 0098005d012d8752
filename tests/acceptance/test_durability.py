"""An acknowledged job survives kill -9; SIGTERM drains and exits cleanly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.acceptance.process import BIN, ServerProcess


def grpcurl(address: str, method: str, data: dict[str, object] | None = None) -> dict:  # type: ignore[type-arg]
    args = [str(BIN / "grpcurl"), "-plaintext"]
    if data is not None:
        args += ["-d", json.dumps(data)]
    result = subprocess.run(
        [*args, address, method], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_job_survives_kill_9(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'j.db'}", tmp_path / "server.log").start()
    try:
        created = grpcurl(
            proc.address,
            "jobwheel.v1.JobService/EnqueueJob",
            {
                "task": "send_email",
                "payload": {"to": "ada@example.com"},
                "schedule": {"delay": "3600s"},
            },
        )["job"]
        proc.kill()
        proc.start()
        got = grpcurl(proc.address, "jobwheel.v1.JobService/GetJob", {"id": created["id"]})["job"]
        assert got == created
    finally:
        proc.stop()


def test_sigterm_stops_gracefully(server_process: ServerProcess) -> None:
    health = grpcurl(server_process.address, "grpc.health.v1.Health/Check")
    assert health == {"status": "SERVING"}
    assert server_process.terminate() == 0
    assert "jobwheel stopped" in server_process.log_path.read_text()


def test_a_second_server_on_the_same_sqlite_file_is_refused(
    server_process: ServerProcess,
) -> None:
    result = subprocess.run(
        [str(BIN / "jobwheel-server"), "--listen", "127.0.0.1:0", "--db", server_process.db_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "another jobwheel server already uses" in result.stderr
    assert "Traceback" not in result.stderr
