"""A real `jobwheel-server` subprocess, for tests that kill, restart and signal it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"jobwheel listening on [\d.]+:(\d+)")


class ServerProcess:
    def __init__(self, db_url: str, log_path: Path, *extra: str) -> None:
        self.db_url = db_url
        self.log_path = log_path
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        log = self.log_path.open("ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [
                str(BIN / "jobwheel-server"),
                "--listen",
                "127.0.0.1:0",
                "--db",
                self.db_url,
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # the repository root on the path: `--handlers tests.handlers` imports
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
                ),
            },
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if match := LISTENING.search(text):
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{text}")
            time.sleep(0.05)
        raise TimeoutError(f"server did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no cleanup, like a crash
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
