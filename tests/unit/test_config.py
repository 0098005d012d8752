"""Settings from flags and JOBWHEEL_* variables (flags win)."""

from __future__ import annotations

import pytest
from jobwheel.server.config import DEFAULT_DB, DEFAULT_LISTEN, parse_settings


def test_defaults() -> None:
    s = parse_settings([], env={})
    assert (s.listen, s.db, s.handlers) == (DEFAULT_LISTEN, DEFAULT_DB, ())
    assert s.sqlite_synchronous == "FULL" and s.max_payload_bytes == 1 << 20


def test_environment_and_flags() -> None:
    env = {
        "JOBWHEEL_LISTEN": "0.0.0.0:6000",
        "JOBWHEEL_DB": "postgresql://u@h/db",
        "JOBWHEEL_HANDLERS": "a.tasks, b.tasks",
        "JOBWHEEL_WEBHOOK_SECRETS": "whsec_a,whsec_b",
        "JOBWHEEL_THREADS": "8",
    }
    s = parse_settings([], env=env)
    assert s.listen == "0.0.0.0:6000" and s.db == "postgresql://u@h/db"
    assert s.handlers == ("a.tasks", "b.tasks") and s.threads == 8
    assert s.webhook_secrets == ("whsec_a", "whsec_b")
    s = parse_settings(["--listen", "127.0.0.1:0", "--handlers", "c", "--handlers", "d"], env=env)
    assert s.listen == "127.0.0.1:0" and s.handlers == ("c", "d")


@pytest.mark.parametrize(
    "argv", [["--threads", "0"], ["--queue-concurrency", "-1"], ["--sqlite-synchronous", "x"]]
)
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_settings(argv, env={})
    assert info.value.code == 2


@pytest.mark.parametrize(("value", "ok"), [("1048576", True), ("1048577", False), ("0", False)])
def test_payload_limit_is_at_most_1_mib(value: str, ok: bool) -> None:
    """A job with payload, result and progress at the limit must fit one 4 MiB reply."""
    if ok:
        assert parse_settings(["--max-payload-bytes", value], env={}).max_payload_bytes == 1 << 20
        return
    with pytest.raises(SystemExit) as info:
        parse_settings(["--max-payload-bytes", value], env={})
    assert info.value.code == 2
