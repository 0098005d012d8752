"""JWT bearer tokens verified against a JWKS file: claims map to a role and queues."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jobwheel.server.security.jwt_auth import JwtError, principal_of
from jobwheel.server.security.principal import Principal
from jobwheel.server.security.roles import Role
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.v1 import job_service_pb2 as jpb

from tests.conftest import Running, running_server

ISSUER = "https://issuer.example"
AUDIENCE = "jobwheel"


class Issuer:
    def __init__(self, jwks_path: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "k1"
        self.path = jwks_path
        self.publish()

    def publish(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        entries = []
        for kid, key in keys or ((self.kid, self.key),):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            entries.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        self.path.write_text(json.dumps({"keys": entries}))

    def token(
        self, key: rsa.RSAPrivateKey | None = None, kid: str | None = None, **claims: Any
    ) -> str:
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "ci",
            "exp": int(time.time()) + 300,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid}
        )


def b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def hmac_token(secret: bytes, claims: dict[str, Any]) -> str:
    """A token "signed" with HS256 using the public key as the secret (forged by hand: PyJWT
    refuses to make one)."""
    claims = {**claims, "exp": int(time.time()) + 300}
    signing_input = b64({"alg": "HS256", "kid": "k1"}) + "." + b64(claims)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@pytest.fixture
async def issuer_and_server(tmp_path: Path) -> AsyncIterator[tuple[Issuer, Running]]:
    issuer = Issuer(tmp_path / "jwks.json")
    settings = SecuritySettings(
        auth_jwks=str(issuer.path), auth_jwt_issuer=ISSUER, auth_jwt_audience=AUDIENCE
    )
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        yield issuer, server


async def code(server: Running, token: str, request: Any = None) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if request is None:
            await server.jobs.ListJobs(jpb.ListJobsRequest(), metadata=metadata)
        else:
            await server.jobs.EnqueueJob(request, metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_claims_map_to_role_and_queues(issuer_and_server: tuple[Issuer, Running]) -> None:
    issuer, server = issuer_and_server
    reader = issuer.token(role="reader")
    assert await code(server, reader) is grpc.StatusCode.OK
    emails = jpb.EnqueueJobRequest(task="remote.work", queue="emails")
    assert await code(server, reader, emails) is grpc.StatusCode.PERMISSION_DENIED
    producer = issuer.token(role="producer", queues="emails newsletters")
    assert await code(server, producer, emails) is grpc.StatusCode.OK
    sms = jpb.EnqueueJobRequest(task="remote.work", queue="sms")
    assert await code(server, producer, sms) is grpc.StatusCode.PERMISSION_DENIED


async def test_invalid_tokens_are_unauthenticated(
    issuer_and_server: tuple[Issuer, Running],
) -> None:
    issuer, server = issuer_and_server
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad = {
        "expired": issuer.token(role="admin", exp=int(time.time()) - 3600),
        "wrong audience": issuer.token(role="admin", aud="someone-else"),
        "wrong issuer": issuer.token(role="admin", iss="https://evil.example"),
        "no role": issuer.token(),
        "unknown role": issuer.token(role="root"),
        "no subject": issuer.token(role="admin", sub=None),
        "other key, same kid": issuer.token(stranger, role="admin"),
        "unknown kid": issuer.token(stranger, kid="k9", role="admin"),
        # the public key used as an HMAC secret: the classic algorithm confusion
        "HS256": hmac_token(
            public_pem, {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "role": "admin"}
        ),
        "alg none": ".".join(
            [b64({"alg": "none", "kid": issuer.kid}), b64({"sub": "x", "role": "admin"}), ""]
        ),
        "garbage": "not.a.jwt",
    }
    for why, token in bad.items():
        assert await code(server, token) is grpc.StatusCode.UNAUTHENTICATED, why


async def test_rotated_keys_in_the_jwks_file_apply_without_a_restart(
    issuer_and_server: tuple[Issuer, Running],
) -> None:
    issuer, server = issuer_and_server
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = issuer.token(new_key, kid="k2", role="reader")
    assert await code(server, token) is grpc.StatusCode.UNAUTHENTICATED
    issuer.publish(("k1", issuer.key), ("k2", new_key))
    assert await code(server, token) is grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"sub": "a", "role": "worker"}, Principal("a", Role.WORKER)),
        (
            {"sub": "a", "role": "reader", "queues": ["x", "y"]},
            Principal("a", Role.READER, frozenset("xy")),
        ),
        (
            {"sub": "a", "role": "reader", "queues": "x y"},
            Principal("a", Role.READER, frozenset("xy")),
        ),
    ],
)
def test_principal_of_claims(claims: dict[str, Any], expected: Principal) -> None:
    assert principal_of(claims) == expected


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "a", "role": "reader", "queues": []},
        {"sub": "a", "role": "reader", "queues": [1]},
        {"sub": "", "role": "reader"},
        {"sub": "a", "role": ["admin"]},
    ],
)
def test_claims_that_name_no_valid_principal(claims: dict[str, Any]) -> None:
    with pytest.raises(JwtError):
        principal_of(claims)


async def test_namespaced_claim_names_are_settings(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path / "jwks.json")
    role, queues = "https://jobwheel.example/role", "https://jobwheel.example/queues"
    settings = SecuritySettings(
        auth_jwks=str(issuer.path),
        auth_jwt_issuer=ISSUER,
        auth_jwt_audience=AUDIENCE,
        auth_jwt_role_claim=role,
        auth_jwt_queues_claim=queues,
    )
    emails = jpb.EnqueueJobRequest(task="remote.work", queue="emails")
    sms = jpb.EnqueueJobRequest(task="remote.work", queue="sms")
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
        producer = issuer.token(**{role: "producer", queues: ["emails"]})
        assert await code(server, producer, emails) is grpc.StatusCode.OK
        assert await code(server, producer, sms) is grpc.StatusCode.PERMISSION_DENIED
        # the default names mean nothing now: no role claim
        plain = issuer.token(role="admin")
        assert await code(server, plain) is grpc.StatusCode.UNAUTHENTICATED


async def test_a_jwks_url_is_fetched(tmp_path: Path) -> None:
    """A real HTTP server on a free port serves the key set."""
    issuer = Issuer(tmp_path / "jwks.json")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kw)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        settings = SecuritySettings(
            auth_jwks=f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json",
            auth_jwt_issuer=ISSUER,
            auth_jwt_audience=AUDIENCE,
        )
        async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", security=settings) as server:
            assert await code(server, issuer.token(role="reader")) is grpc.StatusCode.OK
            stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            forged = issuer.token(stranger, kid="k7", role="reader")
            assert await code(server, forged) is grpc.StatusCode.UNAUTHENTICATED
    finally:
        httpd.shutdown()
