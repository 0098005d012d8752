"""Who is asking: principals, what the role table lets them do, the authenticator seam,
sessions and CSRF tokens.

A principal is resolved on every request. With authentication off (the default) everyone is
an anonymous admin. With --auth-tokens or --auth-jwks a browser signs in once with a token
the server's Authenticator accepts (the one gRPC calls present); the session (a random id in
an HttpOnly, SameSite=Strict cookie, Secure under TLS) keeps the token server-side and it is
checked again on each request, so a revoked token ends its sessions at once. Every
state-changing request carries a CSRF token bound to the session.

There is one role table, security/roles.py: each page and action of the dashboard names the
RPC that does the same thing, and a principal may use it when its role may call that RPC.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from jobwheel.server.errors import Unauthenticated
from jobwheel.server.security import interceptor, roles
from jobwheel.server.security.principal import ANONYMOUS, Principal
from jobwheel.server.security.roles import JOB_SERVICE

# every page: reading jobs (the reader row)
VIEW = JOB_SERVICE + "ListJobs"
# dashboard action -> the RPC it corresponds to
JOB_RPCS = {
    "cancel": JOB_SERVICE + "CancelJob",
    "retry": JOB_SERVICE + "RetryJob",
    "reschedule": JOB_SERVICE + "RescheduleJob",
    "trigger": JOB_SERVICE + "TriggerJob",
    "pause": JOB_SERVICE + "PauseJob",
    "resume": JOB_SERVICE + "ResumeJob",
    "delete": JOB_SERVICE + "DeleteJob",
}
BULK_RPCS = {
    "cancel": JOB_SERVICE + "CancelJobs",
    "retry": JOB_SERVICE + "RetryJobs",
    "pause": JOB_SERVICE + "PauseJobs",
    "resume": JOB_SERVICE + "ResumeJobs",
    "delete": JOB_SERVICE + "DeleteJobs",
}
QUEUE_RPCS = {
    "pause": JOB_SERVICE + "PauseQueue",
    "resume": JOB_SERVICE + "ResumeQueue",
    "limits": JOB_SERVICE + "UpdateQueue",
}


def may(principal: Principal, method: str) -> bool:
    """Whether `principal` may do what the RPC `method` does (the role table's answer)."""
    return roles.allowed(principal.role, method)


def allowed(principal: Principal, rpcs: Mapping[str, str]) -> frozenset[str]:
    """The actions of `rpcs` (action -> RPC) that `principal` may take."""
    return frozenset(name for name, method in rpcs.items() if may(principal, method))


class Authenticator(Protocol):
    """Checks a bearer token; the seam between the dashboard and the server's token store."""

    @property
    def required(self) -> bool:
        """True: requests without a valid token are sent to the sign-in page."""
        ...

    async def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None for an unknown, expired or revoked token."""
        ...


class NoAuthentication:
    """Authentication off: every request is an anonymous admin (main's ANONYMOUS). The
    start-up checks allow that only on a loopback address, or with --insecure."""

    required = False

    async def authenticate(self, token: str) -> Principal | None:
        return ANONYMOUS


class TokenAuthentication:
    """Tokens checked by the server's Authenticator: the tokens file (--auth-tokens) and JWTs
    (--auth-jwks), with the principal, role and queue scope they name."""

    required = True

    def __init__(self, verifier: interceptor.Authenticator) -> None:
        self.verifier = verifier

    async def authenticate(self, token: str) -> Principal | None:
        try:
            return await self.verifier.verify(token)
        except Unauthenticated:
            return None


def authentication(verifier: interceptor.Authenticator) -> Authenticator:
    """The dashboard's authentication for the server's: tokens when it takes tokens."""
    return TokenAuthentication(verifier) if verifier.uses_tokens else NoAuthentication()


@dataclass(slots=True)
class Session:
    id: str
    token: str  # empty: not signed in
    expires: float  # time.monotonic() seconds


class Sessions:
    """In-memory sessions of this process (a restart signs everyone out), bounded in number
    (the oldest go first) and in age."""

    def __init__(self, max_age: float = 12 * 3600, max_sessions: int = 10_000) -> None:
        self.max_age = max_age
        self.max_sessions = max_sessions
        self._secret = secrets.token_bytes(32)
        self._items: OrderedDict[str, Session] = OrderedDict()

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        found = self._items.get(session_id)
        if found is None:
            return None
        if found.expires < time.monotonic():
            del self._items[session_id]
            return None
        return found

    def create(self, token: str = "") -> Session:
        session = Session(secrets.token_urlsafe(32), token, time.monotonic() + self.max_age)
        self._items[session.id] = session
        while len(self._items) > self.max_sessions:
            self._items.popitem(last=False)
        return session

    def drop(self, session_id: str) -> None:
        self._items.pop(session_id, None)

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._secret, session.id.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session | None, token: str) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session), token)
