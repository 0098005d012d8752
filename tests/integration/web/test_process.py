"""`jobwheel-server --http-listen`: the address is printed at start, and a SIGTERM ends the
process promptly even with live streams open."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.acceptance.process import ServerProcess

pytestmark = pytest.mark.slow
DASHBOARD = re.compile(r"dashboard on http://127\.0\.0\.1:(\d+)/")


def dashboard_port(log: Path, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := DASHBOARD.search(log.read_text()):
            return int(found.group(1))
        time.sleep(0.02)
    raise AssertionError(f"no dashboard line in the log:\n{log.read_text()}")


def test_the_dashboard_address_is_printed_and_a_live_stream_does_not_hold_shutdown(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    server = ServerProcess(
        f"sqlite:///{tmp_path / 'j.db'}",
        log,
        "--http-listen",
        "127.0.0.1:0",
        "--grace-period",
        "5",
    ).start()
    try:
        port = dashboard_port(log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            page = http.get("/jobs")
            assert page.status_code == 200 and "<h1>Jobs</h1>" in page.text
            with http.stream("GET", "/jobs/live?since=0") as live:
                assert live.status_code == 200
                started = time.monotonic()
                assert server.terminate(timeout=15) == 0
                assert time.monotonic() - started < 5  # well within the grace period
                # the stream ended with the server, cleanly
                assert b"retry" in b"".join(live.iter_raw())
    finally:
        server.stop()
