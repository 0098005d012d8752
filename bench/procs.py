"""Server subprocesses: jobwheel-server and the bare echo server, each on port 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


class Subprocess:
    """A server child process; `start()` waits until it logs its port."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> Subprocess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "PYTHONUNBUFFERED": "1",
                    # the repository root on the path: `--handlers bench.handlers` imports
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
                raise RuntimeError(f"{self.argv[0]} exited early:\n{text}")
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"{self.argv[0]} did not start:\n{self.log_path.read_text()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Subprocess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def jobwheel_server(
    db_path: Path, log_path: Path, *, handlers: bool = True, extra: Sequence[str] = ()
) -> Subprocess:
    argv = [
        str(BIN / "jobwheel-server"),
        "--listen",
        "127.0.0.1:0",
        "--db",
        f"sqlite:///{db_path}",
        "--grace-period",
        "2",
    ]
    if handlers:
        argv += ["--handlers", "bench.handlers"]
    return Subprocess([*argv, *extra], log_path)


def echo_server(log_path: Path) -> Subprocess:
    return Subprocess([sys.executable, "-m", "bench.echo_server"], log_path)
