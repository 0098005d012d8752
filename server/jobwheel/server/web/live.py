"""Server-Sent Events: the jobs of a filter as they change, fed by the event log.

A stream starts after a revision (the one the page was rendered at, or the Last-Event-ID an
EventSource sends when it reconnects), replays the log from there and then follows the bus, as
WatchJobs does: no gap, no duplicate. Changes are batched (at most one message per
`BATCH_SECONDS`, the newest version of each job) so a browser keeps up with hundreds of changes
per second. Each message carries the rows rendered by the same template as the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from jobwheel.server import model
from jobwheel.server.events import Subscription
from jobwheel.server.matching import matches
from jobwheel.server.web.forms import parse_job_query, scoped
from jobwheel.server.web.site import Site, guarded, resolve
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

BATCH_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
REPLAY_PAGE = 1000
MAX_ROWS = 200  # per message; more changes than that and the page reloads instead
BUFFER = 20_000


def _revision(text: str | None) -> int | None:
    try:
        value = int(text or "")
    except ValueError:
        return None
    return value if value >= 0 else None


@guarded()
async def live_jobs(site: Site, request: Request) -> Response:
    since = _revision(request.headers.get("last-event-id"))
    if since is None:
        since = _revision(request.query_params.get("since"))
    if since is None:
        return PlainTextResponse("since: a revision is required", status_code=400)
    query = parse_job_query(request.query_params)
    if query.errors:
        return PlainTextResponse("; ".join(query.errors), status_code=400)
    flt = scoped(query.filter, request.state.principal.queues)
    stream = _stream(site, request, flt, min(since, site.bus.head))
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def _message(event: str, revision: int, data: object) -> bytes:
    return f"event: {event}\nid: {revision}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(
    site: Site, request: Request, flt: model.JobFilter | None, since: int
) -> AsyncIterator[bytes]:
    # every job is watched: a row that stops matching the filter must be told so
    sub = site.bus.subscribe(model.JobFilter(), BUFFER)
    site.live.add(sub)
    try:
        oldest = await site.core.store.oldest_revision()
        if oldest is not None and since < oldest - 1:
            yield _message("reset", site.bus.head, {"reason": "the log no longer holds it"})
            return
        yield b"retry: 2000\n\n"
        pending: dict[str, model.Event] = {}
        # another queue's jobs are not told of at all, not even as not matching
        sees = request.state.principal.sees
        last = since
        # the log holds what happened between `since` and the subscription
        while last < sub.start - 1:
            page = await site.core.store.read_events(last, REPLAY_PAGE)
            for event in page:
                if event.revision >= sub.start:
                    break
                last = event.revision
                if sees(event.job.queue):
                    pending[event.job.id] = event
            if len(page) < REPLAY_PAGE:
                break
        last = max(last, sub.start - 1)
        while not site.closing.is_set():
            for event in _drain(sub, last):
                last = event.revision
                if sees(event.job.queue):
                    pending[event.job.id] = event
            # a token revoked (or its scope changed) ends the stream at its next message
            if await resolve(site, request.state.session) != request.state.principal:
                yield _message("reset", last, {"reason": "signed out"})
                return
            if sub.overflowed or len(pending) > MAX_ROWS:
                yield _message("reset", last, {"reason": "too many changes"})
                return
            if pending:
                rows = [_row(site, request, flt, e) for e in pending.values()]
                pending.clear()
                yield _message("rows", last, {"rows": rows})
                await _sleep(site, BATCH_SECONDS)
                continue
            if not await _wait(site, sub, HEARTBEAT_SECONDS):
                yield _message("ping", last, {})
    finally:
        site.live.discard(sub)
        site.bus.unsubscribe(sub)


def _drain(sub: Subscription, last: int) -> list[model.Event]:
    out = []
    while sub.buffer:
        event = sub.buffer.popleft()
        if event.revision > last:
            out.append(event)
    sub.ready.clear()
    return out


async def _wait(site: Site, sub: Subscription, seconds: float) -> bool:
    """Waits for an event or the end of the server (True) or `seconds` (False)."""
    if sub.buffer:
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await sub.ready.wait()
            return True
    return False


async def _sleep(site: Site, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(site.closing.wait(), seconds)


def _row(
    site: Site, request: Request, flt: model.JobFilter | None, event: model.Event
) -> dict[str, object]:
    job = event.job
    match = flt is not None and event.type is not model.EventType.DELETED and matches(flt, job)
    row: dict[str, object] = {"id": job.id, "seq": job.seq, "match": match}
    if match:
        row["html"] = site.templates.get_template("_row.html").render(
            job=job, now=site.core.clock.now()
        )
    return row
