"""--version, --metrics-listen and --log-format at the edge; the first log line in text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from jobwheel.server.config import parse_settings, version

from tests.acceptance.process import BIN, ServerProcess


def test_version_prints_and_exits() -> None:
    done = subprocess.run(
        [str(BIN / "jobwheel-server"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"jobwheel-server {version()}" and version() != "unknown"


@pytest.mark.parametrize("good", ["127.0.0.1:0", "0.0.0.0:9464", "[::1]:65535", "host:1"])
def test_metrics_listen_accepts_host_port(good: str) -> None:
    assert parse_settings(["--metrics-listen", good], env={}).metrics_listen == good


@pytest.mark.parametrize("bad", ["9464", ":9464", "host:", "host:65536", "host:x", "a:-1"])
def test_metrics_listen_refuses_garbage(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_settings(["--metrics-listen", bad], env={})
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --metrics-listen: expected HOST:PORT" in err


def test_metrics_are_off_by_default_and_env_sets_them() -> None:
    assert parse_settings([], env={}).metrics_listen == ""
    env = {"JOBWHEEL_METRICS_LISTEN": "127.0.0.1:9", "JOBWHEEL_LOG_FORMAT": "JSON"}
    settings = parse_settings([], env=env)
    assert (settings.metrics_listen, settings.log_format) == ("127.0.0.1:9", "json")


def test_log_format_is_text_or_json() -> None:
    assert parse_settings([], env={}).log_format == "text"
    with pytest.raises(SystemExit):
        parse_settings(["--log-format", "xml"], env={})
    with pytest.raises(SystemExit):
        parse_settings([], env={"JOBWHEEL_LOG_FORMAT": "xml"})
    with pytest.raises(SystemExit):
        parse_settings([], env={"JOBWHEEL_METRICS_LISTEN": "9464"})


@pytest.mark.slow
def test_first_text_line_says_what_runs(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'j.db'}", tmp_path / "log", "--handlers",
                         "tests.handlers", "--metrics-listen", "127.0.0.1:0")  # fmt: skip
    proc.start()
    try:
        first = (tmp_path / "log").read_text().splitlines()[0]
    finally:
        proc.stop()
    assert f"jobwheel {version()} starting: database sqlite:///" in first
    assert "listen 127.0.0.1:0, auth none, handlers test.big_result, test.block," in first
    uvloop = pytest.importorskip("uvloop")
    assert first.endswith(f", event loop uvloop {uvloop.__version__}")  # auto: uvloop


@pytest.mark.slow
def test_event_loop_asyncio_runs_on_asyncio(tmp_path: Path) -> None:
    proc = ServerProcess(f"sqlite:///{tmp_path / 'j.db'}", tmp_path / "log", "--event-loop",
                         "asyncio")  # fmt: skip
    proc.start()
    try:
        first = (tmp_path / "log").read_text().splitlines()[0]
    finally:
        proc.stop()
    assert first.endswith(", event loop asyncio")


def test_database_password_is_hidden_in_logs() -> None:
    from jobwheel.server.app import safe_url

    shown = safe_url("postgresql://user:s3cret@db:5432/jobs")
    assert "s3cret" not in shown and shown.startswith("postgresql://user:")
    assert safe_url("sqlite:///jobwheel.db") == "sqlite:///jobwheel.db"


def test_cli_version() -> None:
    done = subprocess.run(
        [str(BIN / "jobwheel"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"jobwheel {version()}")
