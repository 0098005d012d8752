"""Admission of every call: authenticate, check the role table, set the principal, audit.

Every RPC of JobService and WorkerService passes through its `Admission` before its servicer
runs (api/rpc_stack.py composes it into each method's wrapper):
a missing or bad token is UNAUTHENTICATED; a valid one whose role lacks the RPC's row is
PERMISSION_DENIED with an ErrorInfo naming the role needed. Health is always open;
reflection is open unless `--auth-reflection`. An RPC missing from the role table is refused
for everyone (the table test makes that a test failure rather than a silent hole).

It runs before api/guard.py's checks (which wrap the servicer inside it): a caller who may
not call learns nothing about its request body, and an unexpected exception here is
answered like one in a servicer, INTERNAL with an error id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.rpc import code_pb2, error_details_pb2
from jobwheel.server.api import guard
from jobwheel.server.api.errors import DOMAIN, ApiError, to_grpc_status
from jobwheel.server.errors import DomainError, Unauthenticated, quote
from jobwheel.server.security import audit, roles
from jobwheel.server.security.jwt_auth import JwtError, JwtVerifier
from jobwheel.server.security.principal import ANONYMOUS, Principal
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.server.security.tokens import PREFIX, TokensFile

log = logging.getLogger(__name__)
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
HEALTH = "/grpc.health.v1.Health/"
MAX_QUOTED_SUBJECT = 200  # an operator copies it into the tokens file
REFLECTION = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")


class RoleRequired(ApiError):
    code = code_pb2.PERMISSION_DENIED

    def __init__(self, principal: Principal, method: str, needed: roles.Role | None) -> None:
        name = method.rsplit("/", 1)[-1]
        if needed is None:
            why = f"{name} is in no row of the role table"
        else:
            why = f"{name} needs role {needed.value}"
        super().__init__(f"{why}; {principal.name!r} has role {principal.role.value}")
        self.metadata = {
            "method": method,
            "role": principal.role.value,
            "required_role": needed.value if needed else "",
        }

    def details(self) -> list[Any]:
        return [
            error_details_pb2.ErrorInfo(
                reason="ROLE_REQUIRED", domain=DOMAIN, metadata=self.metadata
            )
        ]


def certificate_subject(context: Context) -> str | None:
    """The verified client certificate's subject (mutual TLS), else None."""
    auth = context.auth_context()
    for key in ("x509_subject", "x509_common_name"):
        values = auth.get(key)
        if values:
            return bytes(values[0]).decode(errors="replace")
    return None


class Authenticator:
    """Turns a call's metadata and peer certificate into a principal."""

    def __init__(self, settings: SecuritySettings) -> None:
        self.tokens = TokensFile(settings.auth_tokens) if settings.auth_tokens else None
        self.jwt = (
            JwtVerifier(
                settings.auth_jwks,
                issuer=settings.auth_jwt_issuer or "",
                audience=settings.auth_jwt_audience or "",
                role_claim=settings.auth_jwt_role_claim,
                queues_claim=settings.auth_jwt_queues_claim,
            )
            if settings.auth_jwks
            else None
        )

    @property
    def uses_tokens(self) -> bool:
        return self.tokens is not None or self.jwt is not None

    async def principal(self, context: Context) -> Principal:
        subject = certificate_subject(context)
        if not self.uses_tokens:
            # no token sources: a client certificate (if any) names an unrestricted caller
            if subject is None:
                return ANONYMOUS
            return Principal(subject, roles.Role.ADMIN, None)
        token = _bearer(context.invocation_metadata() or ())
        if token is not None:
            return await self.verify(token)
        if subject is None or self.tokens is None:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        # no token, a verified client certificate: the tokens file may list its subject
        found = self.tokens.certificate(subject)
        if found is None:
            raise Unauthenticated(
                f"no bearer token, and client certificate {quote(subject, MAX_QUOTED_SUBJECT)} "
                "is not listed in the tokens file"
            )
        return found

    async def verify(self, token: str) -> Principal:
        """The principal of a bearer token from the tokens file or a JWT (the dashboard's
        sign-in checks tokens here too); Unauthenticated for any other token."""
        found: Principal | None = None
        if self.tokens is not None and token.startswith(PREFIX):
            found = self.tokens.lookup(token)
        elif self.jwt is not None and token.count(".") == 2:
            try:
                found = await self.jwt.verify(token)
            except JwtError as exc:
                raise Unauthenticated(f"invalid token: {exc}") from None
        if found is None:
            raise Unauthenticated("invalid token")
        return found


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


@dataclass(frozen=True, slots=True)
class Admission:
    """How one method's calls are let in. `principal` set: every caller is that principal,
    known without looking at the call (no tokens, no client certificates); else
    `admit(context)` names the caller or ends the call (UNAUTHENTICATED, PERMISSION_DENIED,
    or INTERNAL for a failure while authenticating). `audit` logs a call that succeeded."""

    admit: Callable[[Context], Awaitable[Principal]]
    principal: Principal | None
    audit: audit.Recorder | None


class Gate:
    """Authentication, the role table and the audit line, per method: api/rpc_stack.py puts
    each method's `Admission` in its wrapper, inside the metrics and outside the guard."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        protect_reflection: bool,
        client_certificates: bool,
    ) -> None:
        self.authenticator = authenticator
        self.protect_reflection = protect_reflection
        # without tokens or client certificates every caller is ANONYMOUS
        self.client_certificates = client_certificates

    def admission(self, method: str) -> Admission | None:
        """How `method` admits its callers (None: open to all, unaudited)."""
        if method.startswith(HEALTH):
            return None
        if method.startswith(REFLECTION):
            if not self.protect_reflection:
                return None
            return Admission(self._admitter(method, any_role=True), None, None)
        anonymous = not self.authenticator.uses_tokens and not self.client_certificates
        fixed = ANONYMOUS if anonymous and roles.allowed(ANONYMOUS.role, method) else None
        recorder = None if method in roles.NOT_AUDITED else audit.Recorder(method)
        return Admission(self._admitter(method, any_role=False), fixed, recorder)

    def _admitter(self, method: str, any_role: bool) -> Callable[[Context], Awaitable[Principal]]:
        async def admit(context: Context) -> Principal:
            try:
                principal = await self.authenticator.principal(context)
                if not any_role and not roles.allowed(principal.role, method):
                    raise RoleRequired(principal, method, roles.needed(method))
            except DomainError as err:
                log.warning("denied %s: %s", method, err.message)
                await context.abort_with_status(to_grpc_status(err))
                raise  # abort raises; this keeps the type checker informed
            except Exception as exc:
                # a bug or an unexpected failure while authenticating: INTERNAL with an
                # error id (as the guard answers for servicers), never UNKNOWN
                await guard.fail(exc, context, method)
                raise
            return principal

        return admit
