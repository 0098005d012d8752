"""Safe defaults: loopback needs no set-up; other addresses need TLS and authentication."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from jobwheel.server.config import parse_settings
from jobwheel.server.security.settings import (
    SecurityConfigError,
    SecuritySettings,
    check_exposure,
    is_loopback,
)

from tests.acceptance.process import BIN

TLS = {"tls_cert": "c.pem", "tls_key": "k.pem"}


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.8.9.10:1", True),
        ("localhost:0", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.5:50051", False),
        ("jobs.example.com:443", False),
    ],
)
def test_loopback_addresses(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        (SecuritySettings(), "without TLS and authentication"),
        (SecuritySettings(**TLS), "without authentication"),
        (SecuritySettings(auth_tokens="t.toml"), "without TLS"),
        (SecuritySettings(**TLS, auth_tokens="t.toml"), None),
        (SecuritySettings(**TLS, tls_client_ca="ca.pem"), None),
        (SecuritySettings(**TLS, auth_jwks="k.json"), None),
        (SecuritySettings(insecure=True), None),
    ],
)
def test_a_public_listener_needs_tls_and_authentication(
    settings: SecuritySettings, refused: str | None
) -> None:
    check_exposure("127.0.0.1:50051", settings)  # loopback: always fine
    if refused is None:
        check_exposure("0.0.0.0:50051", settings)
    else:
        with pytest.raises(SecurityConfigError, match=refused):
            check_exposure("0.0.0.0:50051", settings)


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("--listen", "refusing to listen on 0.0.0.0:0 without TLS"),
        ("--http-listen", "--http-listen: refusing to listen on 0.0.0.0:0"),
    ],
)
def test_the_server_refuses_with_one_line(tmp_path: Path, flag: str, says: str) -> None:
    proc = subprocess.run(
        [str(BIN / "jobwheel-server"), flag, "0.0.0.0:0", "--db", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"jobwheel-server: {says}")
    assert "--insecure" in lines[0]
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-key", "k.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert"),
        (["--auth-jwks", "k.json", "--auth-jwt-issuer", "i"], "--auth-jwt-audience"),
        (["--auth-jwt-role-claim", "r" * 257], "1-256 printable characters"),
        (["--auth-jwt-queues-claim", "q\x00"], "1-256 printable characters"),
        (["--auth-jwt-role-claim", "scope", "--auth-jwt-queues-claim", "scope"], "must differ"),
    ],
)
def test_flags_that_go_together(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_settings(argv, env={})
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize("name", ["JOBWHEEL_INSECURE", "JOBWHEEL_AUTH_REFLECTION"])
def test_boolean_variables_take_only_boolean_words(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for word, value in (("TRUE", True), ("on", True), ("1", True), ("no", False), ("", False)):
        s = parse_settings([], env={name: word}).security
        assert (s.insecure if name == "JOBWHEEL_INSECURE" else s.auth_reflection) is value
    with pytest.raises(SystemExit):
        parse_settings([], env={name: "ture"})
    [line] = capsys.readouterr().err.strip().splitlines()  # one line, not the usage
    assert f"{name} must be true or false" in line and "'ture'" in line


def test_flags_and_environment() -> None:
    env = {"JOBWHEEL_AUTH_TOKENS": "/etc/jw/tokens.toml", "JOBWHEEL_INSECURE": "true"}
    s = parse_settings(["--tls-cert", "c", "--tls-key", "k", "--auth-reflection"], env=env).security
    assert s == SecuritySettings(
        tls_cert="c",
        tls_key="k",
        auth_tokens="/etc/jw/tokens.toml",
        auth_reflection=True,
        insecure=True,
    )
    assert parse_settings([], env={}).security == SecuritySettings()
    claims = ["--auth-jwt-role-claim", "r" * 256]
    env = {"JOBWHEEL_AUTH_JWT_QUEUES_CLAIM": "https://jobwheel.example/queues"}
    s = parse_settings(claims, env=env).security
    assert (s.auth_jwt_role_claim, s.auth_jwt_queues_claim) == ("r" * 256, env[next(iter(env))])


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--tls-cert", "missing.pem", "--tls-key", "missing.key"], "cannot read --tls-key"),
        (["--auth-tokens", "bad.toml"], "bad.toml: token[0]: must be a table"),
    ],
)
def test_unreadable_security_files_stop_the_start_with_one_line(
    tmp_path: Path, extra: list[str], complaint: str
) -> None:
    (tmp_path / "bad.toml").write_text("token = [1]\n")
    proc = subprocess.run(
        [
            str(BIN / "jobwheel-server"),
            "--listen",
            "127.0.0.1:0",
            "--db",
            f"sqlite:///{tmp_path}/x.db",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert complaint in proc.stderr
