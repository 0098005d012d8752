"""JWT bearer tokens verified against a JWKS (a file or an https URL) with PyJWT.

A token must be signed by a key of the set (asymmetric algorithms only), unexpired, and carry
the configured issuer (`iss`) and audience (`aud`). Its claims map to a principal: `sub` is the
name, `role` one of the role names, and the optional `queues` (a list, or a space-separated
string) the queue scope; the last two claims' names are settings (an issuer may namespace them,
e.g. `https://example.com/role`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt
from jobwheel.server.security.principal import Principal
from jobwheel.server.security.roles import parse_role

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
ALGORITHMS_ED = ("EdDSA",)
LEEWAY_SECONDS = 30  # clock skew between the issuer and this server
# Verified tokens are remembered (by their SHA-256) for up to a minute, never past `exp`:
# a signature check costs about half a millisecond, and clients reuse one token per call.
CACHE_SECONDS = 60.0
CACHE_SIZE = 4096


class JwtError(ValueError):
    """The token is not a valid JWT for this server; the message says why."""


class _JwksFile:
    """A JWKS file, re-read when it changes (keys rotate without a restart)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._set: jwt.PyJWKSet | None = None
        self._load()

    def _load(self) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._set = jwt.PyJWKSet.from_dict(json.loads(self.path.read_text()))
            except (ValueError, jwt.PyJWKSetError) as exc:
                raise JwtError(f"JWKS file {self.path}: {exc}") from None
            self._stamp = stamp

    def key(self, kid: str | None) -> jwt.PyJWK:
        self._load()
        assert self._set is not None
        keys = self._set.keys
        if kid is None and len(keys) == 1:
            return keys[0]
        for key in keys:
            if key.key_id == kid:
                return key
        raise JwtError(f"no key {kid!r} in the JWKS")


class JwtVerifier:
    """Verifies tokens against `jwks` (a file path, or an http(s) URL fetched and cached)."""

    def __init__(
        self,
        jwks: str,
        *,
        issuer: str,
        audience: str,
        role_claim: str = "role",
        queues_claim: str = "queues",
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.queues_claim = queues_claim
        self._url = jwks.startswith(("https://", "http://"))
        self._file = None if self._url else _JwksFile(jwks)
        self._client = (
            jwt.PyJWKClient(jwks, cache_jwk_set=True, lifespan=300) if self._url else None
        )
        self._verified: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    def _key(self, token: str) -> jwt.PyJWK:
        if self._client is not None:
            try:
                return self._client.get_signing_key_from_jwt(token)
            except jwt.PyJWKClientError as exc:
                raise JwtError(str(exc)) from None
        assert self._file is not None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise JwtError(str(exc)) from None
        return self._file.key(kid)

    def _verify(self, token: str) -> Principal:
        key = self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[*ALGORITHMS, *ALGORITHMS_ED],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise JwtError(str(exc)) from None
        principal = principal_of(claims, self.role_claim, self.queues_claim)
        until = min(float(claims["exp"]), time.time() + CACHE_SECONDS)
        self._verified[hashlib.sha256(token.encode()).digest()] = (until, principal)
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; JwtError otherwise."""
        cached = self._verified.get(hashlib.sha256(token.encode()).digest())
        if cached is not None and cached[0] > time.time():
            return cached[1]
        if self._url:
            return await asyncio.to_thread(self._verify, token)  # may fetch the JWKS
        return self._verify(token)


def principal_of(
    claims: dict[str, Any], role_claim: str = "role", queues_claim: str = "queues"
) -> Principal:
    """The principal named by verified claims; JwtError when they do not name a role."""
    name, role = claims.get("sub"), claims.get(role_claim)
    if not isinstance(name, str) or not name:
        raise JwtError("claim 'sub' must be a non-empty string")
    try:
        parsed = parse_role(role if isinstance(role, str) else "")
    except ValueError as exc:
        raise JwtError(f"claim {role_claim!r}: {exc}") from None
    raw = claims.get(queues_claim)
    queues: frozenset[str] | None
    if raw is None:
        queues = None
    elif isinstance(raw, str):
        queues = frozenset(raw.split())
    elif isinstance(raw, list) and all(isinstance(q, str) for q in raw):
        queues = frozenset(raw)
    else:
        raise JwtError(
            f"claim {queues_claim!r} must be a list of queue names or a space-separated string"
        )
    if queues is not None and not queues:
        raise JwtError(f"claim {queues_claim!r} must not be empty (leave it out for every queue)")
    return Principal(name, parsed, queues)
