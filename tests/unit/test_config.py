"""Settings from flags and JOBWHEEL_* variables (flags win)."""

from __future__ import annotations

from typing import Any

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


@pytest.mark.parametrize(("value", "ok"), [("1048576", True), ("1048577", False), ("0", False)])
def test_payload_limit_is_at_most_1_mib(value: str, ok: bool) -> None:
    """A job with payload, result and progress at the limit must fit one 4 MiB reply."""
    if ok:
        assert parse_settings(["--max-payload-bytes", value], env={}).max_payload_bytes == 1 << 20
        return
    _refused(["--max-payload-bytes", value])


def _refused(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(SystemExit) as info:
        parse_settings(argv, env=env or {})
    assert info.value.code == 2
    return str(info.value)


@pytest.mark.parametrize("n", NUMBERS, ids=lambda n: n.flag)
def test_every_number_is_range_checked(n: Any, capsys: pytest.CaptureFixture[str]) -> None:
    def fmt(v: float) -> str:
        return str(int(v)) if n.kind is int else repr(float(v))

    for good in (n.low, n.high, n.default):
        assert getattr(parse_settings([n.flag, fmt(good)], env={}), n.dest) == good
    below = n.low - 1 if n.kind is int else n.low / 2 if n.low > 0 else -1
    bad = [fmt(below), fmt(n.high * 2 + 1), "abc", "nan", "inf", "-inf", ""]
    if n.zero:
        assert getattr(parse_settings([n.flag, "0"], env={}), n.dest) == 0
    for value in bad:
        _refused([f"{n.flag}={value}"])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and n.flag in err and n.env in err, err
    # the environment variable is checked the same way
    _refused([], {n.env: "abc"})
    assert n.env in capsys.readouterr().err
    assert getattr(parse_settings([], env={n.env: fmt(n.low)}), n.dest) == n.low


@pytest.mark.parametrize(
    "listen",
    ["nonsense", ":99999", "127.0.0.1:99999", "127.0.0.1:", "127.0.0.1:-1", ":80", "::1:x"],
)
def test_listen_must_be_host_and_port(listen: str) -> None:
    _refused(["--listen", listen])
    _refused([], {"JOBWHEEL_LISTEN": listen})


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "0.0.0.0:65535", "[::1]:50051", "localhost:1"])
def test_listen_accepted(listen: str) -> None:
    assert parse_settings(["--listen", listen], env={}).listen == listen


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",
        "whsec_abc",  # not base64 (length)
        "whsec_!!!!MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_dG9vIHNob3J0",  # 9 bytes: too short
        "whsec_" + "QUFB" * 30,  # 90 bytes: too long
    ],
)
def test_webhook_secret_must_be_standard(secret: str, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(["--webhook-secret", secret])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--webhook-secret #1" in err
    assert secret.removeprefix("whsec_") not in err or not secret.removeprefix("whsec_")
    _refused([], {"JOBWHEEL_WEBHOOK_SECRETS": f"{SECRET_A},{secret}"})
    assert "#2" in capsys.readouterr().err


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "10.0.0.0/33", "nonsense", "fd00::/129"])
def test_webhook_allow_must_be_networks(cidr: str) -> None:
    _refused(["--webhook-allow", cidr])


@pytest.mark.parametrize(
    "argv",
    [["--log-level", "loud"], ["--sqlite-synchronous", "sometimes"], ["--event-loop", "trio"]],
)
def test_choices(argv: list[str]) -> None:
    _refused(argv)
    assert parse_settings(["--log-level", "debug"], env={}).log_level == "DEBUG"
    assert parse_settings([], env={"JOBWHEEL_SQLITE_SYNCHRONOUS": "normal"}).sqlite_synchronous


def test_event_loop_is_auto_unless_named() -> None:
    assert parse_settings([], env={}).event_loop == "auto"
    assert parse_settings([], env={"JOBWHEEL_EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"
    env = {"JOBWHEEL_EVENT_LOOP": "asyncio"}
    assert parse_settings(["--event-loop", "uvloop"], env=env).event_loop == "uvloop"
    with pytest.raises(SystemExit):
        parse_settings([], env={"JOBWHEEL_EVENT_LOOP": ""})


@pytest.mark.parametrize(
    ("db", "words"),
    [
        ("garbage", "malformed database URL"),
        ("sqlite://", "an in-memory SQLite database cannot be served"),
        ("sqlite:///:memory:", "an in-memory SQLite database cannot be served"),
        ("sqlite:///jobs.db?timeout=5", "a SQLite URL takes no parameters"),
        ("postgresql://u:hunter2@h/db?sslmode=on", "sslmode must be one of"),
        ("postgresql://u:hunter2@h/db?sslmdoe=require", "unknown parameter 'sslmdoe'"),
    ],
)
def test_a_database_url_the_server_cannot_serve_is_a_usage_error(
    db: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, env in ((["--db", db], {}), ([], {"JOBWHEEL_DB": db})):
        _refused(argv, env)
        err = capsys.readouterr().err
        assert words in err and "JOBWHEEL_DB" in err
        assert "hunter2" not in err


def test_a_database_url_with_tls_parameters_is_taken_as_given() -> None:
    db = "postgresql://u@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=jw"
    assert parse_settings(["--db", db], env={}).db == db
