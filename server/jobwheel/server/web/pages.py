"""The read-only pages: jobs, one job, queues, recurring schedules, overview."""

from __future__ import annotations

from typing import Any

from jobwheel.server import model
from jobwheel.server.api import validate
from jobwheel.server.api.errors import NotFound
from jobwheel.server.rules import triggers
from jobwheel.server.rules.states import DELETE, PAUSE, RESUME, TRIGGER, cancel, retry
from jobwheel.server.security.principal import limited
from jobwheel.server.web.forms import parse_job_query, scoped
from jobwheel.server.web.site import Site, guarded
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

STATES = [s.value for s in model.JobState]
MAX_ATTEMPTS_SHOWN = 200
# attempts read for one page, by stored size (each error keeps a traceback of up to 8 KiB)
MAX_ATTEMPT_BYTES = 4 << 20
SCAN_WINDOW = 25_000  # jobs one page of a label or payload filter looks through
FIRES_SHOWN = 10

# which job actions a job in each state offers (the store checks again: these are the
# actions' allowed states)
ACTIONS = {
    "cancel": cancel("").allowed,
    "retry": retry(0).allowed,
    "trigger": TRIGGER.allowed,
    "pause": PAUSE.allowed,
    "resume": RESUME.allowed,
    "reschedule": (
        model.JobState.SCHEDULED,
        model.JobState.QUEUED,
        model.JobState.RETRYING,
        model.JobState.PAUSED,
    ),
    "delete": DELETE.allowed,
}


def actions_for(job: model.Job) -> list[str]:
    return [name for name, allowed in ACTIONS.items() if job.state in allowed]


def _cursor(text: str | None) -> int | None:
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < 1 << 62 else None


@guarded()
async def jobs_page(site: Site, request: Request) -> Response:
    query = parse_job_query(request.query_params)
    after = _cursor(request.query_params.get("after"))
    flt = scoped(query.filter, request.state.principal.queues)
    # the revision before the read: live updates start here, so none is missed
    revision = site.bus.head
    jobs: list[model.Job] = []
    window: tuple[int, int] | None = None
    if flt is not None and not query.errors:
        if flt.payload or flt.labels:
            # no index serves these: look through SCAN_WINDOW jobs per page at most
            top = after - 1 if after else await site.core.store.newest_seq()
            window = (max(1, top - SCAN_WINDOW + 1), top)
        jobs = await site.core.list(
            flt, limit=site.page_size + 1, after_seq=after, descending=True, seq_window=window
        )
    more = len(jobs) > site.page_size
    jobs = jobs[: site.page_size]
    next_cursor = jobs[-1].seq if more else None
    searched_to = None
    if not more and window is not None and window[0] > 1:
        next_cursor = searched_to = window[0]
    return site.render(
        request,
        "jobs.html",
        query=query,
        jobs=jobs,
        states=STATES,
        after=after,
        next_cursor=next_cursor,
        searched_to=searched_to,
        scan_window=SCAN_WINDOW,
        revision=revision,
        page_size=site.page_size,
        done=request.query_params.get("done", ""),
        count=request.query_params.get("count", ""),
    )


async def visible_job(site: Site, request: Request, job_id: str) -> model.Job | None:
    """The job `job_id` names, if the principal sees it; None (a 404) for any other id, one no
    job could have (U+0000, say, which PostgreSQL refuses to compare) included."""
    if not validate.check_id(job_id, "id", validate.Violations()):
        return None
    try:
        job = await site.core.get(job_id)
    except NotFound:
        return None
    return job if request.state.principal.sees(job.queue) else None


@guarded()
async def job_page(site: Site, request: Request) -> Response:
    job_id = request.path_params["job_id"]
    job = await visible_job(site, request, job_id)
    if job is None:
        return site.render(request, "missing.html", status=404, what="job", missing=job_id)
    history = await site.core.history(
        job_id, limit=MAX_ATTEMPTS_SHOWN, max_bytes=MAX_ATTEMPT_BYTES, after=None
    )
    timeline = await site.core.store.job_timeline(job_id)
    fires: list[triggers.Fire] = []
    if job.schedule is not None and job.recurring and not job.state.terminal:
        now = site.core.clock.now()
        fires = triggers.next_fires(job.schedule, now, FIRES_SHOWN)
    return site.render(
        request,
        "job.html",
        job=job,
        history=history,
        timeline=timeline,
        fires=fires,
        zone=(job.schedule.time_zone if job.schedule else "") or "UTC",
        actions=actions_for(job),
        revision=site.bus.head,
        done=request.query_params.get("done", ""),
    )


# Queues on one page of the dashboard, by name
QUEUES_PER_PAGE = 500


@guarded()
async def queues_page(site: Site, request: Request) -> Response:
    store = site.core.store
    asked = request.query_params.get("after", "")
    after = asked if validate.NAME_RE.match(asked) else None  # else the first page
    found = await store.queue_names(after, QUEUES_PER_PAGE + 1, request.state.principal.queues)
    names, more = found[:QUEUES_PER_PAGE], len(found) > QUEUES_PER_PAGE
    settings = await store.queue_settings(names)
    depths = await store.queue_depths(names)
    done = await store.queue_throughput(site.core.clock.now() - 60 * model.SECOND, names)
    rows = []
    for name in names:
        qs = settings.get(name, model.QueueSettings(name))
        rows.append(
            {
                "settings": qs,
                "concurrency": qs.max_concurrency or site.default_concurrency,
                "counts": depths.get(name, {}),
                "total": sum(depths.get(name, {}).values()),
                "last_minute": done.get(name, (0, 0)),
            }
        )
    return site.render(
        request,
        "queues.html",
        rows=rows,
        after=after,
        next_after=names[-1] if more else None,
        states=list(model.JobState),
        done=request.query_params.get("done", ""),
    )


@guarded()
async def recurring_page(site: Site, request: Request) -> Response:
    after = _cursor(request.query_params.get("after"))
    flt = scoped(model.JobFilter(recurring=True), request.state.principal.queues)
    jobs: list[model.Job] = []
    if flt is not None:
        jobs = await site.core.list(flt, limit=site.page_size + 1, after_seq=after, descending=True)
    more = len(jobs) > site.page_size
    jobs = jobs[: site.page_size]
    last = await site.core.store.last_attempts([j.id for j in jobs])
    return site.render(
        request,
        "recurring.html",
        jobs=jobs,
        last=last,
        actions={j.id: actions_for(j) for j in jobs},
        next_cursor=jobs[-1].seq if more else None,
        after=after,
    )


WINDOWS = {"hour": (3600, 60), "day": (86_400, 1800)}  # seconds shown, seconds per slot


@guarded()
async def overview_page(site: Site, request: Request) -> Response:
    window = request.query_params.get("window", "hour")
    if window not in WINDOWS:
        window = "hour"
    span, _ = WINDOWS[window]
    now = site.core.clock.now()
    since = now - span * model.SECOND
    queues = request.state.principal.queues  # None: every queue
    stats = await site.core.store.job_stats(limited(model.JobFilter(), queues), now)
    tasks = await site.core.store.task_summaries(since, queues)
    lateness = sorted(
        late for _, late in await site.core.store.start_lateness(since, queues=queues)
    )
    return site.render(
        request,
        "overview.html",
        window=window,
        stats=stats,
        total=sum(stats.by_state.values()),
        tasks=tasks,
        lateness={
            "count": len(lateness),
            "p50": _rank(lateness, 0.5),
            "p99": _rank(lateness, 0.99),
            "max": lateness[-1] if lateness else None,
        },
        states=list(model.JobState),
    )


@guarded()
async def overview_data(site: Site, request: Request) -> Response:
    """Chart series as JSON: {"t": [slot start s], "succeeded": [...], "failed": [...],
    "failure_rate": [%...], "lateness_ms": [max per slot]}."""
    from starlette.responses import JSONResponse

    window = request.query_params.get("window", "hour")
    if window not in WINDOWS:
        return PlainTextResponse("unknown window", status_code=400)
    span, slot = WINDOWS[window]
    now = site.core.clock.now()
    slot_us = slot * model.SECOND
    since = (now - span * model.SECOND) // slot_us * slot_us
    count = (now - since) // slot_us + 1
    ok = [0] * count
    bad = [0] * count
    queues = request.state.principal.queues  # None: every queue
    for start, outcome, n in await site.core.store.attempt_buckets(since, slot_us, queues):
        i = min(count - 1, (start - since) // slot_us)
        if outcome is model.AttemptOutcome.SUCCEEDED:
            ok[i] += n
        else:
            bad[i] += n
    late: list[float | None] = [None] * count
    for start, lateness in await site.core.store.start_lateness(since, queues=queues):
        i = min(count - 1, (start - since) // slot_us)
        late[i] = max(late[i] or 0.0, lateness / 1000)
    data: dict[str, Any] = {
        "t": [(since + i * slot_us) // model.SECOND for i in range(count)],
        "succeeded": ok,
        "failed": bad,
        "failure_rate": [
            round(100 * b / (o + b), 1) if o + b else None for o, b in zip(ok, bad, strict=True)
        ],
        "lateness_ms": late,
    }
    return JSONResponse(data)


def _rank(values: list[int], p: float) -> int | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(p * len(values) + 0.5) - 1))]
