"""The tokens file: its shape, hashes only, `token create`, and changes without a restart."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.app import main as server_main
from jobwheel.server.security.principal import Principal
from jobwheel.server.security.roles import Role
from jobwheel.server.security.tokens import (
    TokensFile,
    TokensFileError,
    digest,
    entry_text,
    parse,
)
from jobwheel.v1 import job_service_pb2 as jpb

from tests.conftest import Running
from tests.integration.security.conftest import Tokens

HASH = "a" * 64


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[[token]\n", "tokens file"),
        ('token = "x"\n', "array of tables"),
        ('[[token]]\nname = "ci"\nrole = "root"\nsha256 = "' + HASH + '"\n', "unknown role 'root'"),
        ('[[token]]\nname = "ci"\nrole = "reader"\nsha256 = "abc"\n', "64 lower-case hex"),
        (
            '[[token]]\nname = "ci"\nrole = "reader"\ntoken = "jw_x"\nsha256 = "' + HASH + '"\n',
            "unknown keys",
        ),
        ('[[token]]\nname = ""\nrole = "reader"\nsha256 = "' + HASH + '"\n', "name must be"),
        (
            '[[token]]\nname = "ci"\nrole = "reader"\nqueues = []\nsha256 = "' + HASH + '"\n',
            "non-empty list",
        ),
        (
            '[[token]]\nname = "ci"\nrole = "reader"\nqueues = ["a b"]\nsha256 = "' + HASH + '"\n',
            "invalid queue name",
        ),
        (
            ('[[token]]\nname = "ci"\nrole = "reader"\nsha256 = "' + HASH + '"\n') * 2,
            "used twice",
        ),
        ('[[tokens]]\nname = "ci"\n', "unknown tables"),
        ("certificate = 1\n", "array of tables"),
        ('[[certificate]]\nrole = "worker"\n', r"certificate\[0\]: subject must be"),
        ('[[certificate]]\nsubject = ""\nrole = "worker"\n', "subject must be 1-1024"),
        ('[[certificate]]\nsubject = "CN=a\\n"\nrole = "worker"\n', "printable"),
        ('[[certificate]]\nsubject = "' + "x" * 1025 + '"\nrole = "worker"\n', "1-1024"),
        ('[[certificate]]\nsubject = "CN=a"\nrole = "root"\n', "unknown role"),
        ('[[certificate]]\nsubject = "CN=a"\nrole = "worker"\nsha256 = "x"\n', "unknown keys"),
        (('[[certificate]]\nsubject = "CN=a"\nrole = "worker"\n') * 2, "listed twice"),
    ],
)
def test_a_malformed_file_is_refused_with_the_reason(text: str, complaint: str) -> None:
    with pytest.raises(TokensFileError, match=complaint):
        parse(text)


@given(
    name=st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True),
    role=st.sampled_from(list(Role)),
    queues=st.lists(st.from_regex(r"[a-z0-9_.:-]{1,10}", fullmatch=True), max_size=3, unique=True),
    token=st.text(min_size=1, max_size=80).filter(lambda t: "\x00" not in t),
)
def test_entries_round_trip_and_only_the_token_matches(
    name: str, role: Role, queues: list[str], token: str
) -> None:
    [entry] = parse(entry_text(name, role, queues, token)).tokens
    assert entry.principal == Principal(name, role, frozenset(queues) if queues else None)
    assert entry.digest == hashlib.sha256(token.encode()).digest()


def test_certificate_entries_name_a_principal_by_subject() -> None:
    subject = "CN=" + "w" * 1021  # at the limit: 1,024 characters
    text = (
        f'[[certificate]]\nsubject = "{subject}"\nrole = "worker"\nqueues = ["billing"]\n'
        '[[certificate]]\nsubject = "CN=ops,O=Example"\nrole = "operator"\n'
    )
    parsed = parse(text)
    assert parsed.tokens == []
    assert parsed.certificates == {
        subject: Principal(subject, Role.WORKER, frozenset({"billing"})),
        "CN=ops,O=Example": Principal("CN=ops,O=Example", Role.OPERATOR, None),
    }


def test_token_create_prints_a_token_once_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.toml"
    argv = ["token", "create", "--file", str(path), "--name", "ci", "--role", "producer"]
    with pytest.raises(SystemExit) as done:
        server_main([*argv, "--queues", "emails,sms"])
    assert done.value.code == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("jw_") and len(token) > 40
    text = path.read_text()
    assert token not in text and digest(token) in text
    assert os.stat(path).st_mode & 0o077 == 0  # readable by its owner only
    found = TokensFile(path).lookup(token)
    assert found == Principal("ci", Role.PRODUCER, frozenset({"emails", "sms"}))
    # a second token of the same name would make the file invalid: refused, file unchanged
    with pytest.raises(SystemExit) as again:
        server_main(argv)
    assert again.value.code == 2 and path.read_text() == text


async def test_a_tokens_file_change_takes_effect_without_a_restart(
    secured: Running, tokens: Tokens
) -> None:
    async def code(token: str) -> grpc.StatusCode:
        try:
            metadata = (("authorization", f"Bearer {token}"),)
            await secured.jobs.ListJobs(jpb.ListJobsRequest(), metadata=metadata)
        except grpc.aio.AioRpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    new = "jw_" + "n" * 43
    assert await code(new) is grpc.StatusCode.UNAUTHENTICATED
    with tokens.path.open("a") as out:
        out.write(entry_text("newcomer", Role.READER, (), new))
    assert await code(new) is grpc.StatusCode.OK

    # revoke the reader token by rewriting the file without it (atomically, as editors do)
    reader = tokens.plain["reader"]
    kept = [e for e in tokens.path.read_text().split("\n\n") if digest(reader) not in e]
    replacement = tokens.path.with_suffix(".new")
    replacement.write_text("\n\n".join(kept))
    replacement.replace(tokens.path)
    assert await code(reader) is grpc.StatusCode.UNAUTHENTICATED
    assert await code(new) is grpc.StatusCode.OK

    # a broken file keeps the tokens in force until it is fixed
    tokens.path.write_text(tokens.path.read_text() + "[[token\n")
    assert await code(new) is grpc.StatusCode.OK


def test_a_missing_file_accepts_no_token_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.toml"
    tokens = TokensFile(path)
    assert tokens.lookup("jw_x") is None
    path.write_text(entry_text("ci", Role.READER, (), "jw_x"))
    assert tokens.lookup("jw_x") == Principal("ci", Role.READER)
    path.unlink()  # removed: every token is revoked
    assert tokens.lookup("jw_x") is None
