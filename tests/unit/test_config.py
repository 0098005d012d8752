"""Settings from flags and JOBWHEEL_* variables (flags win)."""

from __future__ import annotations

import pytest
from jobwheel.server.config import DEFAULT_DB, DEFAULT_LISTEN, NUMBERS, parse_settings

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


def test_defaults() -> None:
    s = parse_settings([], env={})
    assert (s.listen, s.db, s.handlers) == (DEFAULT_LISTEN, DEFAULT_DB, ())
    assert s.sqlite_synchronous == "FULL" and s.max_payload_bytes == 1 << 20


def test_environment_and_flags() -> None:
    env = {
        "JOBWHEEL_LISTEN": "0.0.0.0:6000",
        "JOBWHEEL_DB": "postgresql://u@h/db",
        "JOBWHEEL_HANDLERS": "a.tasks, b.tasks",
        "JOBWHEEL_WEBHOOK_SECRETS": f"{SECRET_A},{SECRET_B}",
        "JOBWHEEL_THREADS": "8",
    }
    s = parse_settings([], env=env)
    assert s.listen == "0.0.0.0:6000" and s.db == "postgresql://u@h/db"
    assert s.handlers == ("a.tasks", "b.tasks") and s.threads == 8
    assert s.webhook_secrets == (SECRET_A, SECRET_B)
    s = parse_settings(["--listen", "127.0.0.1:0", "--handlers", "c", "--handlers", "d"], env=env)
    assert s.listen == "127.0.0.1:0" and s.handlers == ("c", "d")


@pytest.mark.parametrize(
    "argv", [["--threads", "0"], ["--queue-concurrency", "-1"], ["--sqlite-synchronous", "x"]]
)
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_settings(argv, env={})
    assert info.value.code == 2
