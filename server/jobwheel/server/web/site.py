"""What every handler shares: the dependencies, the per-request guard (session, principal,
CSRF, permission) and the security headers."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jobwheel.server.core import Core
from jobwheel.server.events import EventBus, Subscription
from jobwheel.server.security import roles
from jobwheel.server.security.principal import Principal
from jobwheel.server.security.roles import Role
from jobwheel.server.web import views
from jobwheel.server.web.auth import (
    BULK_RPCS,
    JOB_RPCS,
    QUEUE_RPCS,
    VIEW,
    Authenticator,
    NoAuthentication,
    Session,
    Sessions,
    allowed,
    may,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HERE = Path(__file__).parent
SESSION_COOKIE = "jobwheel_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 64 * 1024

# No inline script or style anywhere: every script and style sheet is a file under /static.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


@dataclass
class Site:
    core: Core
    bus: EventBus
    default_concurrency: int
    authenticator: Authenticator = field(default_factory=NoAuthentication)
    sessions: Sessions = field(default_factory=Sessions)
    tls: bool = False
    page_size: int = 50
    # set when the server stops: live streams end so the HTTP server can close
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # the subscriptions of open live streams (woken when the server stops)
    live: set[Subscription] = field(default_factory=set)
    templates: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(views.FILTERS)

    def close(self) -> None:
        """Ends the live streams, so their connections can close."""
        self.closing.set()
        for sub in self.live:
            sub.ready.set()

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        principal = request.state.principal
        html = self.templates.get_template(template).render(
            request=request,
            principal=principal,
            csrf_token=self.sessions.csrf_token(request.state.session),
            # the buttons shown: the actions whose RPCs the principal's role may call
            job_actions=allowed(principal, JOB_RPCS),
            bulk_actions=allowed(principal, BULK_RPCS),
            queue_actions=allowed(principal, QUEUE_RPCS),
            auth_required=self.authenticator.required,
            now=self.core.clock.now(),
            **context,
        )
        return HTMLResponse(html, status_code=status)


Handler = Callable[[Site, Request], Awaitable[Response]]
# the RPC (full method path) a request corresponds to, for the role table
Permission = str | Callable[[Request], str]


def by_action(rpcs: Mapping[str, str]) -> Callable[[Request], str]:
    """The RPC of the request's {action}; an unknown action needs only VIEW (it is a 404)."""
    return lambda request: rpcs.get(request.path_params["action"], VIEW)


def guarded(
    permission: Permission | None = VIEW,
) -> Callable[[Handler], Callable[[Site, Request], Awaitable[Response]]]:
    """Resolves the session and principal, refuses a POST without the session's CSRF token,
    and checks that the principal's role may call the RPC `permission` names (None: open to
    everyone, e.g. the sign-in page)."""

    def wrap(handler: Handler) -> Callable[[Site, Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def guard(site: Site, request: Request) -> Response:
            session = site.sessions.get(request.cookies.get(SESSION_COOKIE))
            fresh = session is None
            if session is None:
                session = site.sessions.create()
            request.state.session = session
            principal = await resolve(site, session)
            request.state.principal = principal or SIGNED_OUT
            if request.method == "POST":
                # browsers send a length with every form; a body without one could be endless
                length = request.headers.get("content-length", "")
                if not length.isdigit():
                    return PlainTextResponse("a Content-Length is required", status_code=411)
                if int(length) > MAX_FORM_BYTES:
                    return PlainTextResponse("form too large", status_code=413)
                form = await request.form()
                sent = str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")
                if fresh or not site.sessions.csrf_ok(session, sent):
                    return _with_cookie(
                        site,
                        PlainTextResponse("missing or wrong CSRF token", status_code=403),
                        session,
                        fresh,
                    )
            if permission is not None:
                if principal is None:
                    if request.method == "GET":
                        target = request.url.path
                        if request.url.query:
                            target += "?" + request.url.query
                        response: Response = RedirectResponse(
                            f"/signin?{_next(target)}", status_code=303
                        )
                    else:
                        response = PlainTextResponse("sign in first", status_code=401)
                    return _with_cookie(site, response, session, fresh)
                method = permission if isinstance(permission, str) else permission(request)
                if not may(principal, method):
                    needed = roles.needed(method)
                    response = PlainTextResponse(
                        f"this needs role {needed.value if needed else 'admin'}; "
                        f"{principal.name!r} has role {principal.role.value}",
                        status_code=403,
                    )
                    return _with_cookie(site, response, session, fresh)
            return _with_cookie(site, await handler(site, request), session, fresh)

        return guard

    return wrap


# before sign-in: a principal granted nothing (only the sign-in page is open to it)
SIGNED_OUT = Principal("", Role.WORKER, authenticated=False)


async def resolve(site: Site, session: Session) -> Principal | None:
    """The session's principal, from its token checked now; None: not signed in."""
    if not site.authenticator.required:
        return await site.authenticator.authenticate("")
    if not session.token:
        return None
    return await site.authenticator.authenticate(session.token)


def set_session_cookie(site: Site, response: Response, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        max_age=int(site.sessions.max_age),
        path="/",
        httponly=True,
        samesite="strict",
        secure=site.tls,
    )


def _with_cookie(site: Site, response: Response, session: Session, fresh: bool) -> Response:
    if fresh:
        set_session_cookie(site, response, session)
    return response


def _next(target: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"next": target})


def safe_next(target: str) -> str:
    """A local path to return to after a form; anything else (another site) is '/'. Browsers
    drop tabs and line breaks from a URL: "/\t/evil.example" would lead to //evil.example."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    if local and target.isprintable():
        return target
    return "/"


class SecurityHeaders:
    """Adds the CSP and its companions to every response, and a Server-Timing header with the
    time the server took until the response started (`app;dur=` milliseconds)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = f"app;dur={(time.perf_counter() - started) * 1000:.2f}".encode()
                message["headers"] = [
                    *message.get("headers", []),
                    *SECURITY_HEADERS,
                    (b"server-timing", took),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
