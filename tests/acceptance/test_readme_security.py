"""The README's Security examples, run as printed against a server with TLS and tokens.

Marked like the other README examples (`<!-- example: NAME -->`, see test_readme.py); the
blocks run in a directory holding ca.pem, server.pem and server.key made here for 127.0.0.1,
with the server's address substituted for 127.0.0.1:50051.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.acceptance.process import ROOT, ServerProcess
from tests.acceptance.test_readme import (
    FENCE,
    MARKER,
    README_ADDRESS,
    Result,
    bash,
    commands,
    section,
    shell_env,
)

SECTION = "Security"


def security_examples() -> dict[str, tuple[str, str, bool]]:
    text = section(SECTION)
    marked = {body for *_, body in MARKER.findall(text)}
    for lang, body in FENCE.findall(text):
        assert body in marked, f"unmarked {lang} block in README section {SECTION!r}:\n{body}"
    return {name: (lang, body, not not_run) for name, not_run, lang, body in MARKER.findall(text)}


def test_the_security_examples_are_marked() -> None:
    found = security_examples()
    assert {n for n, (_, _, run) in found.items() if run} == {"secure-grpcurl", "secure-node"}
    serve = found["secure-serve"][1]
    for flag in ("--tls-cert server.pem", "--tls-key server.key", "--auth-tokens tokens.toml"):
        assert flag in serve


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (tmp_path / "server.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (tmp_path / "server.key").write_bytes(cert.private_key_pem.bytes())
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


@pytest.fixture
def server(workdir: Path) -> Iterator[ServerProcess]:
    """The server of the secure-serve example, on a free loopback port."""
    proc = ServerProcess(
        f"sqlite:///{workdir / 'jobwheel.db'}",
        workdir / "server.log",
        "--tls-cert",
        str(workdir / "server.pem"),
        "--tls-key",
        str(workdir / "server.key"),
        "--auth-tokens",
        str(workdir / "tokens.toml"),
        "--handlers",
        "examples.handlers",
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


def run_in(workdir: Path, script: str, address: str, **env: str) -> Result:
    proc = subprocess.run(
        bash(script, address, errexit=False),
        capture_output=True,
        text=True,
        env={**shell_env(address), "PYTHONPATH": str(ROOT), **env},
        cwd=workdir,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_secure_grpcurl_and_cli(workdir: Path, server: ServerProcess) -> None:
    _, body, _ = security_examples()["secure-grpcurl"]
    stated = commands(body)
    # each command followed by its exit status, so the stated `# exit N` can be checked
    script = "\n".join(f'{cmd}\necho "::exit $?"' for cmd, _ in stated)
    result = run_in(workdir, script, server.address)
    exits = [int(code) for code in re.findall(r"^::exit (\d+)$", result.out, re.M)]
    assert exits == [code or 0 for _, code in stated], result.err

    enqueued = json.loads(result.out[result.out.index("{") : result.out.index("::exit 0\n", 20)])
    assert enqueued["job"]["queue"] == "emails"
    assert result.err.count("Code: PermissionDenied") == 2
    assert "may not use queue 'sms'" in result.err
    assert '"required_role":"operator"' in result.err  # the ErrorInfo of CancelJobs
    assert "Code: Unauthenticated" in result.err
    assert re.search(rf"^{enqueued['job']['id']}\s+send_email\s+emails", result.out, re.M)
    assert "sha256" in (workdir / "tokens.toml").read_text()
    assert README_ADDRESS not in result.out + result.err


def test_secure_node_example(workdir: Path, server: ServerProcess) -> None:
    if shutil.which("node") is None or not (ROOT / "examples/node/node_modules").is_dir():
        pytest.skip("the Node.js example needs node and `npm install` in examples/node")
    token = subprocess.run(
        [
            *("jobwheel-server", "token", "create", "--file", "tokens.toml", "--name", "node"),
            *("--role", "producer", "--queues", "emails"),
        ],
        capture_output=True,
        text=True,
        env=shell_env(server.address),
        cwd=workdir,
        check=True,
    ).stdout.strip()
    _, body, _ = security_examples()["secure-node"]
    result = run_in(workdir, body, server.address, TOKEN=token)
    assert result.code == 0, result.err
    job = json.loads(result.out)
    assert job["task"] == "send_email" and job["state"] == "JOB_STATE_QUEUED"
    # without the token the same command is refused
    denied = run_in(workdir, body, server.address, TOKEN="jw_wrong")
    assert denied.code == 1 and "UNAUTHENTICATED" in denied.err.upper()
