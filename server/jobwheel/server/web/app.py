"""The dashboard's ASGI application: routes, static files, security headers."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from jobwheel.server.web import actions, live, pages, signin
from jobwheel.server.web.site import HERE, SecurityHeaders, Site
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp


def create_app(site: Site) -> ASGIApp:
    def bind(
        handler: Callable[[Site, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        return functools.partial(handler, site)

    async def home(request: Request) -> Response:
        return RedirectResponse("/jobs", status_code=303)

    both = ["GET", "POST"]
    routes = [
        Route("/", home),
        Route("/jobs", bind(pages.jobs_page)),
        Route("/jobs/live", bind(live.live_jobs)),
        Route("/jobs/bulk/{action}", bind(actions.bulk_action), methods=both),
        Route("/jobs/{job_id}", bind(pages.job_page)),
        Route("/jobs/{job_id}/{action}", bind(actions.job_action), methods=both),
        Route("/queues", bind(pages.queues_page)),
        Route("/queues/{name}/{action}", bind(actions.queue_action), methods=both),
        Route("/recurring", bind(pages.recurring_page)),
        Route("/overview", bind(pages.overview_page)),
        Route("/overview/data", bind(pages.overview_data)),
        Route("/signin", bind(signin.signin), methods=both),
        Route("/signout", bind(signin.signout), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return SecurityHeaders(Starlette(routes=routes))
