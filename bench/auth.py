"""`python -m bench.auth`: what authenticating one call costs, in microseconds.

Runs the server's Authenticator in-process on a minimal call context (metadata and an empty
peer auth context), for a tokens file of several sizes (every entry is compared, in constant
time, and the file is stat'ed per call to notice changes) and for an RS256 JWT checked
against a JWKS file.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jobwheel.server.security.interceptor import Authenticator
from jobwheel.server.security.roles import Role
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.server.security.tokens import entry_text, new_token


class _Context:
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> Any:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


async def _per_call(auth: Authenticator, token: str, calls: int) -> float:
    context: Any = _Context(token)
    assert await auth.principal(context)
    start = time.perf_counter()
    for _ in range(calls):
        await auth.principal(context)
    return (time.perf_counter() - start) / calls * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for size in (1, 10, 100, 1000):
            path = Path(tmp) / f"tokens-{size}.toml"
            tokens = [new_token() for _ in range(size)]
            path.write_text(
                "".join(entry_text(f"t{i}", Role.READER, (), t) for i, t in enumerate(tokens))
            )
            auth = Authenticator(SecuritySettings(auth_tokens=str(path)))
            us = await _per_call(auth, tokens[-1], 20_000 if size < 1000 else 2_000)
            print(f"tokens file, {size:>4} entries: {us:8.1f} us per call")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwks = Path(tmp) / "jwks.json"
        jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k", "alg": "RS256"}]}))
        claims = {"iss": "i", "aud": "a", "sub": "ci", "role": "reader", "exp": time.time() + 600}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k"})
        settings = SecuritySettings(auth_jwks=str(jwks), auth_jwt_issuer="i", auth_jwt_audience="a")
        us = await _per_call(Authenticator(settings), token, 5_000)
        print(f"JWT RS256 (JWKS file):        {us:8.1f} us per call")


if __name__ == "__main__":
    asyncio.run(main())
