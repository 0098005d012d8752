"""Every state change the dashboard makes: a GET shows what will happen (the confirmation
step, with the count for bulk actions), the POST does it through the Core, as the RPCs do."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from jobwheel.server import model
from jobwheel.server.api import validate
from jobwheel.server.errors import DomainError
from jobwheel.server.rules import states
from jobwheel.server.rules.states import Action
from jobwheel.server.web.auth import BULK_RPCS, JOB_RPCS, QUEUE_RPCS
from jobwheel.server.web.forms import FormError, parse_job_query, parse_time, scoped
from jobwheel.server.web.pages import ACTIONS, visible_job
from jobwheel.server.web.site import Site, by_action, guarded, safe_next
from jobwheel.v1 import job_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

MAX_REASON = 1024
MAX_DELAY_SECONDS = 366 * 86_400
MAX_CONCURRENCY = 100_000


def _delay(form: FormData) -> int:
    text = str(form.get("delay") or "0").strip() or "0"
    try:
        seconds = float(text)
    except ValueError:
        raise FormError("delay: a number of seconds") from None
    if not 0 <= seconds <= MAX_DELAY_SECONDS:
        raise FormError(f"delay: between 0 and {MAX_DELAY_SECONDS} seconds")
    return int(seconds * model.SECOND)


def _reason(form: FormData) -> str:
    reason = str(form.get("reason") or "").strip()
    if len(reason) > MAX_REASON:
        raise FormError(f"reason: at most {MAX_REASON} characters")
    return reason


def _reschedule(form: FormData, job: model.Job, now: int) -> Action:
    """The new schedule from the form, checked as RescheduleJob checks it; the job's other
    schedule policies (overlap, misfire, DST...) are kept."""
    kind = str(form.get("kind") or "at")
    proto = job_pb2.Schedule()
    if kind == "at":
        at = parse_time(str(form.get("at") or ""))
        if at is None:
            raise FormError("at: a date and time is required")
        proto.start_time.CopyFrom(timestamp_pb2.Timestamp(seconds=at // model.SECOND))
    elif kind == "cron":
        proto.cron = str(form.get("cron") or "").strip()[:256]
        proto.time_zone = str(form.get("time_zone") or "").strip()[:64]
    elif kind == "interval":
        try:
            seconds = int(str(form.get("interval") or ""))
        except ValueError:
            raise FormError("interval: a whole number of seconds") from None
        if not 1 <= seconds <= 10 * 366 * 86_400:
            raise FormError("interval: between 1 second and 10 years")
        proto.interval.CopyFrom(duration_pb2.Duration(seconds=seconds))
    else:
        raise FormError("kind: at, cron or interval")
    errors = validate.Violations()
    schedule = validate.schedule_from_proto(proto, "schedule", now, errors)
    if errors.items:
        raise FormError("; ".join(f"{v.field}: {v.description}" for v in errors.items))
    if job.schedule is not None:
        schedule = replace(
            job.schedule,
            start_time=schedule.start_time,
            cron=schedule.cron,
            time_zone=schedule.time_zone,
            interval=schedule.interval,
        )
    next_run = validate.first_run(schedule, now, "schedule", errors)
    if errors.items:
        raise FormError("; ".join(v.description for v in errors.items))
    return states.reschedule(schedule, next_run, now)


def _job_action(name: str, form: FormData, job: model.Job, now: int) -> Action:
    if name == "cancel":
        return states.cancel(_reason(form))
    if name == "retry":
        return states.retry(_delay(form))
    if name == "reschedule":
        return _reschedule(form, job, now)
    return {
        "trigger": states.TRIGGER,
        "pause": states.PAUSE,
        "resume": states.RESUME,
        "delete": states.DELETE,
    }[name]


@guarded(by_action(JOB_RPCS))
async def job_action(site: Site, request: Request) -> Response:
    """GET: the confirmation form; POST: the action, then back to the job (or `next`)."""
    name = request.path_params["action"]
    job_id = request.path_params["job_id"]
    job = await visible_job(site, request, job_id)
    if job is None or name not in ACTIONS:
        return site.render(request, "missing.html", status=404, what="job", missing=job_id)
    back = safe_next(request.query_params.get("next") or f"/jobs/{job.id}")
    error = ""
    if request.method == "POST":
        form = await request.form()
        back = safe_next(str(form.get("next") or back))
        try:
            action = _job_action(name, form, job, site.core.clock.now())
            await site.core.act_on(job.id, action)
        except (FormError, DomainError) as exc:
            error = str(exc)
        else:
            if name == "delete":
                back = "/jobs" if back.startswith(f"/jobs/{job.id}") else back
            return RedirectResponse(_with_done(back, name), status_code=303)
    return site.render(
        request,
        "confirm.html",
        action=name,
        job=job,
        back=back,
        error=error,
        status=422 if error else 200,
    )


def _bulk_action(name: str, form: FormData) -> Action:
    if name == "cancel":
        return states.cancel(_reason(form))
    if name == "retry":
        return states.retry(_delay(form))
    return {
        "pause": states.PAUSE,
        "resume": states.RESUME,
        "delete": states.DELETE,
    }[name]


@guarded(by_action(BULK_RPCS))
async def bulk_action(site: Site, request: Request) -> Response:
    """GET: how many jobs of the current filter the action would change, and the form;
    POST: the action on every one of them, in batches."""
    name = request.path_params["action"]
    if name not in BULK_RPCS:
        return site.render(request, "missing.html", status=404, what="action", missing=name)
    query = parse_job_query(request.query_params)
    flt = scoped(query.filter, request.state.principal.queues)
    error = ""
    if query.errors:
        error = "; ".join(query.errors)
    elif flt is None or query.filter.empty:
        error = "set a filter first: a bulk action on every job is not allowed"
    if request.method == "POST" and not error and flt is not None:
        form = await request.form()
        try:
            action = _bulk_action(name, form)
            count = await site.core.act_on_all(flt, action)
        except (FormError, DomainError) as exc:
            error = str(exc)
        else:
            return RedirectResponse(
                f"/jobs?{query.query(done=f'bulk-{name}', count=count)}", status_code=303
            )
    count = 0
    if flt is not None and not query.errors:
        allowed = _bulk_action(name, FormData()).allowed
        stats = await site.core.store.job_stats(flt, site.core.clock.now())
        count = sum(n for state, n in stats.by_state.items() if state in allowed)
    return site.render(
        request,
        "bulk.html",
        action=name,
        query=query,
        count=count,
        error=error,
        status=422 if error and request.method == "POST" else 200,
    )


@guarded(by_action(QUEUE_RPCS))
async def queue_action(site: Site, request: Request) -> Response:
    """pause, resume or limits of one queue: GET confirms (or shows the limits form)."""
    name = request.path_params["name"]
    action = request.path_params["action"]
    errors = validate.Violations()
    validate.check_name(name, "name", errors)
    if (
        errors.items
        or action not in ("pause", "resume", "limits")
        or not request.state.principal.sees(name)
    ):
        return site.render(request, "missing.html", status=404, what="queue", missing=name)
    settings = (await site.core.store.queue_settings()).get(name, model.QueueSettings(name))
    error = ""
    if request.method == "POST":
        form = await request.form()
        try:
            changes = _queue_changes(action, form)
            await site.core.update_queue(name, **changes)
        except FormError as exc:
            error = str(exc)
        else:
            return RedirectResponse(f"/queues?done={action}", status_code=303)
    return site.render(
        request,
        "queue_confirm.html",
        action=action,
        queue=settings,
        concurrency=settings.max_concurrency or site.default_concurrency,
        error=error,
        status=422 if error else 200,
    )


def _queue_changes(action: str, form: FormData) -> dict[str, Any]:
    if action == "pause":
        return {"paused": True}
    if action == "resume":
        return {"paused": False}
    try:
        concurrency = int(str(form.get("max_concurrency") or ""))
        rate = float(str(form.get("max_dispatches_per_second") or "0") or "0")
    except ValueError:
        raise FormError("limits: whole number of jobs, number of dispatches per second") from None
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise FormError(f"max concurrency: between 1 and {MAX_CONCURRENCY}")
    if not 0 <= rate < float("inf"):
        raise FormError("max dispatches per second: a number >= 0 (0: no limit)")
    return {"max_concurrency": concurrency, "max_dispatches_per_second": rate}


def _with_done(path: str, name: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}done={name}"
