"""A real `jobwheel-server` subprocess, for tests that kill, restart and signal it.

The launcher (port 0, wait for the "listening" line, repository root on PYTHONPATH) is the
benchmarks' own; tests add what they do to it.
"""

from __future__ import annotations

import signal
from pathlib import Path

from bench.procs import BIN, ROOT, Subprocess

__all__ = ["BIN", "ROOT", "ServerProcess"]


class ServerProcess(Subprocess):
    def __init__(self, db_url: str, log_path: Path, *extra: str) -> None:
        argv = [str(BIN / "jobwheel-server"), "--listen", "127.0.0.1:0", "--db", db_url, *extra]
        super().__init__(argv, log_path)
        self.db_url = db_url

    def start(self, timeout: float = 20.0) -> ServerProcess:
        super().start(timeout)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no cleanup, like a crash
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 0.0) -> None:
        """Tests end servers at once (SIGKILL); graceful stops are tested with terminate()."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
