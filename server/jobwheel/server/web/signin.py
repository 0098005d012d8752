"""Signing in with a token and out again."""

from __future__ import annotations

from jobwheel.server.web.auth import VIEW, may
from jobwheel.server.web.site import (
    SESSION_COOKIE,
    Site,
    guarded,
    safe_next,
    set_session_cookie,
)
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

MAX_TOKEN = 4096


@guarded(permission=None)
async def signin(site: Site, request: Request) -> Response:
    """GET: the form; POST: checks the token and starts a new session holding it (a new id,
    so a session id known before sign-in is worth nothing after)."""
    back = safe_next(request.query_params.get("next") or "/jobs")
    error, status = "", 200
    if request.method == "POST":
        form = await request.form()
        back = safe_next(str(form.get("next") or back))
        token = str(form.get("token") or "").strip()
        principal = None
        if token and len(token) <= MAX_TOKEN:
            principal = await site.authenticator.authenticate(token)
        if principal is None:
            error, status = "That token is not valid.", 401
        elif not may(principal, VIEW):  # e.g. a worker's token: the API would refuse it too
            error, status = f"The role {principal.role.value} may not use the dashboard.", 403
        else:
            site.sessions.drop(request.state.session.id)
            session = site.sessions.create(token)
            response = RedirectResponse(back, status_code=303)
            set_session_cookie(site, response, session)
            return response
    return site.render(request, "signin.html", back=back, error=error, status=status)


@guarded(permission=None)
async def signout(site: Site, request: Request) -> Response:
    site.sessions.drop(request.state.session.id)
    response = RedirectResponse("/signin" if site.authenticator.required else "/jobs", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
