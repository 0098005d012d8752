"""`jobwheel watch` on a terminal: the live view as a person sees it, on a pseudo-terminal
of 12 rows, against a server subprocess that is killed and started again."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobwheel.client import Client

from tests.acceptance.process import BIN, ServerProcess
from tests.acceptance.terminal import Terminal

ROWS, COLS = 12, 160
ATTEMPT = re.compile(r"reconnecting, attempt (\d+)")
CLOCK = re.compile(r"\b(\d\d:\d\d:\d\d)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def port() -> int:
    return free_port()


def start_server(tmp_path: Path, port: int) -> ServerProcess:
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'jobwheel.db'}",
        tmp_path / f"server-{time.monotonic_ns()}.log",
        "--handlers",
        "tests.handlers",
        "--listen",
        f"127.0.0.1:{port}",
    )
    return proc.start()


@pytest.fixture
def server(tmp_path: Path, port: int) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path, port)
    try:
        yield proc
    finally:
        proc.stop()


def title(lines: list[str]) -> str:
    return lines[0]


def test_live_view(tmp_path: Path, server: ServerProcess, port: int) -> None:
    address = f"127.0.0.1:{port}"
    with Client(address) as jw:
        for _ in range(20):  # more rows than the screen has
            jw.enqueue_job("test.noop", delay="1h")
        jw.enqueue_job("test.boom", max_attempts=1)
        running = jw.enqueue_job("test.hang").job.id

    term = Terminal(
        [str(BIN / "jobwheel"), "watch"], {**os.environ, "JOBWHEEL_SERVER": address}, ROWS, COLS
    )
    try:
        lines = term.wait_for(lambda ls: "22 jobs" in title(ls) and "RUNNING" in "\n".join(ls))
        # the title stays on the first line; what does not fit is counted
        assert title(lines).startswith(f"jobwheel watch  {address}  22 jobs  revision ")
        more = [line for line in lines if line.startswith("... ")]
        assert len(more) == 1 and re.fullmatch(r"\.\.\. 1[0-9] more", more[0]), lines
        header = next(line for line in lines if line.startswith("ID"))
        assert "STATE" in header and "PROGRESS / LAST ERROR" in header
        row = next(line for line in lines if line.startswith(running))
        assert re.search(r"RUNNING\s+1\s+running 0:\d\d", row), row
        failed = next(line for line in lines if "FAILED" in line)
        assert "ValueError: boom" in failed
        assert term.fg_of("FAILED") == "red" and term.fg_of("RUNNING") in ("yellow", "brown")
        assert term.fg_of("SCHEDULED") == "blue"

        # nothing happens, yet the clock ticks (and the running job's time with it)
        first = CLOCK.search(title(lines))
        assert first is not None
        term.wait_for(lambda ls: (m := CLOCK.search(title(ls))) is not None and m[1] != first[1])

        # the server goes away: one status line under the title, the rows stay
        server.kill()
        # several redraws and reconnection attempts later
        lines = term.wait_for(
            lambda ls: any(int(m[1]) >= 3 for line in ls if (m := ATTEMPT.search(line)))
        )
        lost = [line for line in lines if "connection lost" in line]
        assert len(lost) == 1 and lines[1] == lost[0], lines
        assert "reconnecting, attempt" in lost[0]
        assert title(lines).startswith("jobwheel watch")

        # it comes back on the same address: the status line clears
        again = start_server(tmp_path, port)
        try:
            lines = term.wait_for(
                lambda ls: (
                    not any("connection lost" in line for line in ls) and "22 jobs" in title(ls)
                )
            )
            assert lines[1] == ""
        finally:
            again.stop()
        assert term.interrupt() == 0
    finally:
        term.close()
