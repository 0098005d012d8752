"""The caller of the current RPC and what its queue scope lets it see and touch.

Each call's admission (security/interceptor.py) sets the principal for the duration of the
call (a context variable, so servicers need no extra parameter). Without authentication every
caller is ANONYMOUS: an unscoped admin, which keeps the local set-up free of configuration.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, replace

from jobwheel.server import model
from jobwheel.server.errors import InvalidField, NotFound, PermissionDenied
from jobwheel.server.security.roles import Role

# A queue name no job can have (names are validated letters, digits and _-.:): a scoped
# filter whose queues do not meet the scope matches nothing.
NO_QUEUE = " "
MAX_WORKER_ID = 255


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls. `queues` None: every queue; else only jobs of these queues."""

    name: str
    role: Role
    queues: frozenset[str] | None = None
    # True for callers named by a token or certificate: their leases carry their name
    authenticated: bool = True

    def sees(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues


ANONYMOUS = Principal("anonymous", Role.ADMIN, None, authenticated=False)
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS)


def current() -> Principal:
    """The principal of the RPC being served (ANONYMOUS outside one)."""
    return _current.get()


def set_current(principal: Principal) -> contextvars.Token[Principal]:
    return _current.set(principal)


def reset_current(token: contextvars.Token[Principal]) -> None:
    _current.reset(token)


def narrow(flt: model.JobFilter) -> model.JobFilter:
    """`flt` limited to the caller's queues (unchanged for an unscoped caller)."""
    return limited(flt, current().queues)


def limited(flt: model.JobFilter, scope: frozenset[str] | None) -> model.JobFilter:
    """`flt` limited to the queues of `scope` (None: every queue); one matching nothing when
    they do not meet."""
    if scope is None:
        return flt
    queues = tuple(sorted(scope)) if not flt.queues else tuple(q for q in flt.queues if q in scope)
    return replace(flt, queues=queues or (NO_QUEUE,))


def visible(job: model.Job) -> model.Job:
    """`job` if the caller may see it; NOT_FOUND otherwise (its existence is not revealed)."""
    if not current().sees(job.queue):
        raise NotFound("job", job.id)
    return job


def check_queue(queue: str, field: str) -> None:
    """PERMISSION_DENIED when the caller's scope does not include `queue`."""
    principal = current()
    if not principal.sees(queue):
        raise PermissionDenied(
            f"{field}: principal {principal.name!r} may not use queue {queue!r} "
            f"(its queues: {', '.join(sorted(principal.queues or ()))})"
        )


def check_unscoped(what: str) -> None:
    """PERMISSION_DENIED for a queue-scoped caller: `what` spans every queue."""
    principal = current()
    if principal.queues is not None:
        raise PermissionDenied(f"{what} needs a principal not limited to queues")


def lease_owner(worker_id: str) -> str:
    """The worker identity a lease is stored under: the principal's name, '/', the worker id.

    Reports must come from the same principal, so one team's worker cannot complete another
    team's job. Callers without authentication keep their plain worker id. A '/' (and '%') in
    the name is escaped: JWT subjects and certificate names may hold one, and principal
    "team/a" with worker "b" must not pass for principal "team" with worker "a/b".
    """
    principal = current()
    if not principal.authenticated:
        return worker_id
    name = principal.name.replace("%", "%25").replace("/", "%2F")
    owner = f"{name}/{worker_id}"
    if len(owner) > MAX_WORKER_ID:
        raise InvalidField(
            "worker_id", f"with the principal name it is longer than {MAX_WORKER_ID} characters"
        )
    return owner
