"""Who is asking: principals, roles, the authenticator seam, sessions and CSRF tokens.

A principal is resolved on every request. With authentication off (the default) everyone is
an anonymous admin. With an authenticator that checks tokens, a browser signs in with a token
once; the session (a random id in an HttpOnly, SameSite=Strict cookie, Secure under TLS) keeps
the token server-side and it is checked again on each request, so a revoked token ends its
sessions at once. Every state-changing request carries a CSRF token bound to the session.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol


class Role(enum.StrEnum):
    READER = "reader"
    PRODUCER = "producer"
    OPERATOR = "operator"
    WORKER = "worker"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    VIEW = "view"  # every page
    MANAGE_JOBS = "manage_jobs"  # cancel, retry, trigger, pause, resume, reschedule, delete
    MANAGE_QUEUES = "manage_queues"  # pause, resume, edit limits


# The one role table: the buttons shown and the server's checks both read it.
GRANTS: dict[Role, frozenset[Permission]] = {
    Role.READER: frozenset({Permission.VIEW}),
    Role.PRODUCER: frozenset({Permission.VIEW}),
    Role.OPERATOR: frozenset(Permission),
    Role.WORKER: frozenset(),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    # queues the principal may see and act on; empty: every queue
    queues: frozenset[str] = frozenset()

    def can(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def sees_queue(self, queue: str) -> bool:
        return not self.queues or queue in self.queues


ANONYMOUS_ADMIN = Principal("anonymous", Role.ADMIN)


class Authenticator(Protocol):
    """Checks a bearer token; the seam for the server's token store."""

    @property
    def required(self) -> bool:
        """True: requests without a valid token are sent to the sign-in page."""
        ...

    async def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None for an unknown, expired or revoked token."""
        ...


class NoAuthentication:
    """Authentication off: every request is an anonymous admin."""

    required = False

    async def authenticate(self, token: str) -> Principal | None:
        return ANONYMOUS_ADMIN


class StaticTokens:
    """A fixed token -> principal table (for tests and small set-ups)."""

    required = True

    def __init__(self, tokens: dict[str, Principal]) -> None:
        self._tokens = dict(tokens)

    async def authenticate(self, token: str) -> Principal | None:
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        return None


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
