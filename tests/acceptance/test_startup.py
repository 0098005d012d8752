"""Every start-up error is one clear line on stderr and a non-zero exit, never a traceback:
the real `jobwheel-server` for each case."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.acceptance.process import BIN, ServerProcess
from tests.conftest import PG_ENV, unavailable
from tests.ports import refused_port


def run_server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> tuple[int, str]:
    argv = [*prefix, str(BIN / "jobwheel-server")]
    if not any(a.startswith("--listen") for a in args):
        argv += ["--listen", "127.0.0.1:0"]
    if not any(a.startswith("--db") for a in args):
        argv += ["--db", f"sqlite:///{tmp_path / 'jobwheel.db'}"]
    result = subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )
    return result.returncode, result.stderr


def assert_one_line(code: int, stderr: str, *expected: str) -> None:
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert stderr.startswith("jobwheel-server: "), stderr
    for text in expected:
        assert text in stderr, stderr


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--listen", "nonsense"], {}, "HOST:PORT"),
        (["--listen", ":99999"], {}, "0 to 65535"),
        (["--listen", "127.0.0.1:65536"], {}, "0 to 65535"),
        (["--listen", "no-such-host.invalid:5000"], {}, "does not resolve"),
        (["--webhook-allow", "10.0.0.1/8"], {}, "--webhook-allow"),
        (["--webhook-allow", "everything"], {}, "--webhook-allow"),
        (["--webhook-secret", "not-a-secret"], {}, "whsec_"),
        (["--log-level", "LOUD"], {}, "--log-level"),
        ([], {"JOBWHEEL_LOG_LEVEL": "chatty"}, "JOBWHEEL_LOG_LEVEL"),
        ([], {"JOBWHEEL_THREADS": "lots"}, "JOBWHEEL_THREADS"),
        ([], {"JOBWHEEL_THREADS": "0"}, "JOBWHEEL_THREADS"),
        (["--recover-interval", "0"], {}, "--recover-interval"),
        (["--watch-heartbeat", "0"], {}, "--watch-heartbeat"),
        (["--grace-period", "-1"], {}, "--grace-period"),
        (["--db", "mysql://x@y/z"], {}, "unsupported database URL"),
        (["--db", "garbage"], {}, "malformed database URL"),
        (["--db", "sqlite://"], {}, "an in-memory SQLite database cannot be served"),
        (["--db", "postgresql://x@127.0.0.1/z?sslmode=on"], {}, "sslmode must be one of"),
        (
            ["--db", "postgresql://x@127.0.0.1/z?keepalives_idle=0"],
            {},
            "keepalives_idle must be an integer from 1 to 32767, got '0'",
        ),
        (["--handlers", "no_such_module_here"], {}, "No module named 'no_such_module_here'"),
    ],
)
def test_bad_settings_are_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    assert_one_line(*run_server(tmp_path, *args, env=env), expected)


def test_handlers_module_raising_on_import_shows_its_error(tmp_path: Path) -> None:
    (tmp_path / "broken_tasks.py").write_text("x = 1\nraise RuntimeError('bad config')\n")
    code, err = run_server(tmp_path, "--handlers", "broken_tasks")
    assert_one_line(code, err, "broken_tasks", "RuntimeError: bad config", "broken_tasks.py:2")
    (tmp_path / "syntax_tasks.py").write_text("def f(:\n")
    assert_one_line(*run_server(tmp_path, "--handlers", "syntax_tasks"), "SyntaxError")


def test_corrupt_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "jobwheel.db").write_bytes(b"this is not a database" * 100)
    assert_one_line(*run_server(tmp_path), "file is not a database")


def test_read_only_sqlite_file_and_directory(tmp_path: Path) -> None:
    # as root, permissions only bind once DAC override is dropped
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")
    data = tmp_path / "data"
    data.mkdir()
    db = f"sqlite:///{data / 'j.db'}"
    ServerProcess(db, tmp_path / "first.log").start().stop(20)  # a normal database first
    (data / "j.db").chmod(0o444)
    try:
        code, err = run_server(tmp_path, "--db", db, prefix=prefix)
        assert_one_line(code, err, "readonly")
        (data / "j.db").chmod(0o644)
        for extra in data.glob("j.db-*"):
            extra.unlink()
        data.chmod(0o555)
        assert_one_line(*run_server(tmp_path, "--db", db, prefix=prefix), "readonly")
    finally:
        data.chmod(0o755)
        (data / "j.db").chmod(0o644)


def test_port_in_use(tmp_path: Path, held_port: int) -> None:
    code, err = run_server(tmp_path, "--listen", f"127.0.0.1:{held_port}")
    assert_one_line(code, err, f"127.0.0.1:{held_port}", "in use")


def test_a_second_server_on_the_same_address_is_refused(tmp_path: Path) -> None:
    first = ServerProcess(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a.log").start()
    try:
        code, err = run_server(
            tmp_path, "--listen", first.address, "--db", f"sqlite:///{tmp_path / 'b.db'}"
        )
        assert_one_line(code, err, first.address)
    finally:
        first.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("part", ["database", "username"])
def test_postgres_database_or_role_missing(tmp_path: Path, part: str) -> None:
    base = os.environ.get(PG_ENV, "")
    if not base:
        unavailable(f"{PG_ENV} is not set")
    url = make_url(base).set(**{part: "jobwheel_no_such_thing"})
    code, err = run_server(tmp_path, "--db", url.render_as_string(hide_password=False))
    assert_one_line(code, err, '"jobwheel_no_such_thing" does not exist')


def test_postgres_unreachable(tmp_path: Path) -> None:
    with refused_port() as port:
        code, err = run_server(tmp_path, "--db", f"postgresql://postgres@127.0.0.1:{port}/x")
    assert_one_line(code, err, "cannot reach", "ConnectionRefusedError")
