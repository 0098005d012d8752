"""A server that requires tokens (one per role) and TLS material made by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.server.security.roles import Role
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.server.security.tokens import entry_text, new_token

from tests.conftest import Running, running_server


@dataclass
class Tokens:
    """A tokens file and the plain tokens written to it, by principal name."""

    path: Path
    plain: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, role: Role, queues: tuple[str, ...] = ()) -> str:
        token = new_token()
        with self.path.open("a") as out:
            out.write(entry_text(name, role, queues, token))
        self.plain[name] = token
        return token

    def bearer(self, name: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.plain[name]}"),)


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    t = Tokens(tmp_path / "tokens.toml")
    for role in Role:
        t.add(role.value, role)
    return t


@pytest.fixture
async def secured(tmp_path: Path, tokens: Tokens) -> AsyncIterator[Running]:
    """SQLite is enough: access control sits above storage and is the same on both."""
    settings = SecuritySettings(auth_tokens=str(tokens.path))
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        yield server


def md(tokens: Tokens, name: str) -> dict[str, Any]:
    return {"metadata": tokens.bearer(name)}


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Pems:
    """PEM files on disk, as the server and clients take them."""

    dir: Path
    write: Callable[[str, bytes], str]


@pytest.fixture
def pems(tmp_path: Path) -> Pems:
    def write(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    return Pems(tmp_path, write)
