"""The dashboard over plain HTTP: security headers, sessions, CSRF, roles, escaping, hostile
inputs, bulk counts and live-stream resumption."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from google.protobuf import duration_pb2, struct_pb2
from jobwheel.server.web.pages import QUEUES_PER_PAGE
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.integration.api.waiting import wait_for_state
from tests.integration.web.conftest import Dashboard, csrf_of, sign_in

SCRIPT = "<script>alert('pwned')</script>"


async def enqueue(dash: Dashboard, task: str = "test.echo", **fields: Any) -> job_pb2.Job:
    payload = struct_pb2.Struct()
    payload.update(fields.pop("payload", {}))
    request = pb.EnqueueJobRequest(task=task, payload=payload, **fields)
    return (await dash.jobs.EnqueueJob(request)).job


def later(seconds: int = 3600) -> job_pb2.Schedule:
    return job_pb2.Schedule(delay=duration_pb2.Duration(seconds=seconds))


async def test_pages_send_a_strict_csp_and_a_locked_down_session_cookie(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    job = await enqueue(dash, schedule=later())
    for path in ("/jobs", f"/jobs/{job.id}", "/queues", "/recurring", "/overview"):
        reply = await http.get(path)
        assert reply.status_code == 200, path
        csp = reply.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "style-src 'self'" in csp
        assert reply.headers["x-frame-options"] == "DENY"
        # no inline script or style the CSP would block
        assert not re.search(r"<script(?![^>]*\bsrc=)", reply.text), path
        assert "<style" not in reply.text and " style=" not in reply.text, path
    cookie = (await httpx.AsyncClient(base_url=dash.url).get("/jobs")).headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # plain HTTP here; Secure under TLS


async def test_a_script_in_the_payload_is_shown_as_text(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    job = await enqueue(
        dash, schedule=later(), payload={"html": SCRIPT}, labels={"note": "<b>x</b>"}
    )
    for path in (f"/jobs/{job.id}", "/jobs", "/jobs?label=note%3D%3Cb%3Ex%3C/b%3E"):
        page = (await http.get(path)).text
        assert SCRIPT not in page and "<b>x</b>" not in page
    page = (await http.get(f"/jobs/{job.id}")).text
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page


async def test_a_forged_action_without_the_csrf_token_is_refused(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    job = await enqueue(dash, schedule=later())
    path = f"/jobs/{job.id}/cancel"
    token = await csrf_of(http, path)
    # no token, a wrong one, and another browser's valid token
    assert (await http.post(path, data={"reason": "x"})).status_code == 403
    assert (await http.post(path, data={"csrf_token": "0" * 64})).status_code == 403
    async with httpx.AsyncClient(base_url=dash.url) as other:
        other_token = await csrf_of(other, path)
        assert (await other.post(path, data={"csrf_token": token})).status_code == 403
        # a cookie-less request (another site's form) is refused too
        async with httpx.AsyncClient(base_url=dash.url) as bare:
            assert (await bare.post(path, data={"csrf_token": other_token})).status_code == 403
    got = (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_SCHEDULED
    # the header works as well as the form field, and then the action happens
    reply = await http.post(path, data={"reason": "by hand"}, headers={"x-csrf-token": token})
    assert reply.status_code == 303
    got = (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_CANCELLED
    assert got.cancel_reason == "by hand"


async def test_actions_confirm_first_and_refuse_a_wrong_state(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    job = await enqueue(dash, schedule=later())
    confirm = await http.get(f"/jobs/{job.id}/pause")
    assert confirm.status_code == 200 and "Pause job" in confirm.text
    assert (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.state == (
        job_pb2.JOB_STATE_SCHEDULED
    )  # showing the confirmation changes nothing
    token = await csrf_of(http, f"/jobs/{job.id}/pause")
    assert (await http.post(f"/jobs/{job.id}/pause", data={"csrf_token": token})).status_code == 303
    # retry is for finished jobs: the core says why not
    reply = await http.post(f"/jobs/{job.id}/retry", data={"csrf_token": token, "delay": "5"})
    assert reply.status_code == 422 and "cannot retry" in reply.text
    reply = await http.post(f"/jobs/{job.id}/retry", data={"csrf_token": token, "delay": "-1"})
    assert reply.status_code == 422 and "delay" in reply.text
    # reschedule: a cron in a zone, checked as RescheduleJob checks it
    bad = {"csrf_token": token, "kind": "cron", "cron": "61 * * * *", "time_zone": "UTC"}
    assert (await http.post(f"/jobs/{job.id}/reschedule", data=bad)).status_code == 422
    good = {**bad, "cron": "0 9 * * *", "time_zone": "Europe/Paris"}
    assert (await http.post(f"/jobs/{job.id}/reschedule", data=good)).status_code == 303
    got = (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.schedule.cron == "0 9 * * *" and got.state == job_pb2.JOB_STATE_PAUSED
    page = (await http.get(f"/jobs/{job.id}")).text
    assert page.count("CET") + page.count("CEST") == 10  # the next 10 fires, in Paris time
    assert (await http.get("/jobs/nope/cancel")).status_code == 404
    assert (await http.get(f"/jobs/{job.id}/explode")).status_code == 404


async def test_bulk_actions_show_the_count_then_act_on_the_filter(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    for _ in range(3):
        await enqueue(dash, schedule=later(), labels={"batch": "b1"})
    await enqueue(dash, schedule=later(), labels={"batch": "b2"})
    confirm = await http.get("/jobs/bulk/cancel?label=batch%3Db1")
    assert confirm.status_code == 200
    assert re.search(r'id="bulk-count">3<', confirm.text)
    token = await csrf_of(http, "/jobs/bulk/cancel?label=batch%3Db1")
    reply = await http.post(
        "/jobs/bulk/cancel?label=batch%3Db1", data={"csrf_token": token, "reason": "cleanup"}
    )
    assert reply.status_code == 303 and "count=3" in reply.headers["location"]
    listed = await dash.jobs.ListJobs(
        pb.ListJobsRequest(filter=job_pb2.JobFilter(states=[job_pb2.JOB_STATE_CANCELLED]))
    )
    assert len(listed.jobs) == 3
    # no filter: refused, nothing changes
    reply = await http.post("/jobs/bulk/delete", data={"csrf_token": token})
    assert reply.status_code == 422 and "set a filter first" in reply.text
    assert len((await dash.jobs.ListJobs(pb.ListJobsRequest())).jobs) == 4


async def test_hostile_filter_inputs_are_reported_not_crashed_on(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    job = await enqueue(dash, schedule=later(), payload={"n": 42, "who": "ann"})
    cases = {
        "state=exploded": "unknown state",
        "queue=bad%20name": "queue:",
        "label=novalue": "label:",
        "created_from=yesterday": "created:",
        "created_from=2026-01-02T00:00&created_to=2026-01-01T00:00": "start is after",
        "id=%3Cscript%3E": "id:",
        "next_from=99999-01-01T00:00": "next run:",
        "queue=" + "q," * 40: "at most",
    }
    for query, message in cases.items():
        reply = await http.get(f"/jobs?{query}")
        assert reply.status_code == 200, query
        assert message in reply.text, query
    for query in ("after=abc", "after=-5", "after=99999999999999999999999", "id=" + "a" * 5000):
        assert (await http.get(f"/jobs?{query}")).status_code == 200, query
    nul = await http.get("/jobs?task=a%00b&payload=k%3D%00")
    assert nul.status_code == 200
    # payload values read as JSON when they are JSON: 42 is the number, "42" a string
    assert job.id in (await http.get("/jobs?payload=n%3D42")).text
    assert job.id not in (await http.get("/jobs?payload=n%3D%2242%22")).text
    assert job.id in (await http.get("/jobs?payload=who%3Dann")).text
    assert job.id in (await http.get(f"/jobs?id={job.id[:8]}")).text
    assert job.id in (await http.get(f"/jobs?id={job.id.upper()}")).text
    assert (await http.get("/overview/data?window=week")).status_code == 400
    big = {"csrf_token": "x", "reason": "r" * 100_000}
    assert (await http.post(f"/jobs/{job.id}/cancel", data=big)).status_code == 413

    async def endless() -> AsyncIterator[bytes]:
        yield b"csrf_token=x&reason="
        yield b"r" * 1000

    chunked = await http.post(f"/jobs/{job.id}/cancel", content=endless())
    assert chunked.status_code == 411


async def events(
    http: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) of a Server-Sent Events stream."""
    async with http.stream("GET", path, headers=headers) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in reply.aiter_lines():
            if not line:
                if "event" in fields:
                    yield fields["event"], fields.get("id", ""), json.loads(fields["data"])
                fields = {}
                continue
            name, _, value = line.partition(": ")
            fields[name] = value


async def test_live_rows_resume_after_the_last_event_id_without_a_gap(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    page = (await http.get("/jobs?task=test.echo")).text
    since = re.search(r'data-since="(\d+)"', page)
    assert since
    first = await enqueue(dash)
    await wait_for_state(dash.jobs, first.id)
    # a reconnecting EventSource sends Last-Event-ID; it wins over ?since
    stream = events(http, "/jobs/live?task=test.echo&since=0", {"last-event-id": since.group(1)})
    seen: dict[str, str] = {}
    last_id = 0
    second: job_pb2.Job | None = None
    async with asyncio.timeout(15):
        async for event, event_id, data in stream:
            if event != "rows":
                continue
            assert int(event_id) > last_id
            last_id = int(event_id)
            for row in data["rows"]:
                assert row["match"] and row["id"] in row["html"]
                seen[row["id"]] = re.search(r"state-(\w+)", row["html"]).group(1)  # type: ignore[union-attr]
            if seen.get(first.id) == "completed" and second is None:
                second = await enqueue(dash)  # arrives live, after the replay
            if second is not None and seen.get(second.id) == "completed":
                break
    await stream.aclose()
    assert seen[first.id] == "completed"
    # a job of another task changes nothing here: the filter holds
    other = await enqueue(dash, task="test.noop")
    await wait_for_state(dash.jobs, other.id)
    stream = events(http, "/jobs/live?task=test.echo", {"last-event-id": str(last_id)})
    tail = await enqueue(dash)
    async with asyncio.timeout(15):
        async for event, _, data in stream:
            if event == "rows":
                matching = [r["id"] for r in data["rows"] if r["match"]]
                assert other.id not in matching
                if tail.id in matching:
                    break
    await stream.aclose()
    assert (await http.get("/jobs/live?task=test.echo")).status_code == 400  # no revision


async def test_queue_pause_resume_and_limits(dash: Dashboard, http: httpx.AsyncClient) -> None:
    await enqueue(dash, schedule=later(), queue="mail")
    page = (await http.get("/queues")).text
    assert 'data-queue="mail"' in page
    token = await csrf_of(http, "/queues/mail/limits")
    bad = {"csrf_token": token, "max_concurrency": "0", "max_dispatches_per_second": "1"}
    assert (await http.post("/queues/mail/limits", data=bad)).status_code == 422
    bad = {"csrf_token": token, "max_concurrency": "5", "max_dispatches_per_second": "inf"}
    assert (await http.post("/queues/mail/limits", data=bad)).status_code == 422
    good = {"csrf_token": token, "max_concurrency": "5", "max_dispatches_per_second": "2.5"}
    assert (await http.post("/queues/mail/limits", data=good)).status_code == 303
    assert (await http.post("/queues/mail/pause", data={"csrf_token": token})).status_code == 303
    queues = {q.name: q for q in (await dash.jobs.ListQueues(pb.ListQueuesRequest())).queues}
    assert queues["mail"].paused
    assert queues["mail"].max_concurrency == 5
    assert queues["mail"].max_dispatches_per_second == 2.5
    assert (await http.get("/queues/bad%20name/pause")).status_code == 404


async def test_the_queues_page_pages_by_name(dash: Dashboard, http: httpx.AsyncClient) -> None:
    names = [f"q{i:04d}" for i in range(QUEUES_PER_PAGE + 1)]
    jobs = [pb.EnqueueJobRequest(task="nobody", queue=name) for name in names]
    for start in range(0, len(jobs), 1000):
        await dash.jobs.BatchEnqueueJobs(
            pb.BatchEnqueueJobsRequest(jobs=jobs[start : start + 1000])
        )
    first = (await http.get("/queues")).text
    shown = re.findall(r'data-queue="([^"]+)"', first)
    assert shown == names[:QUEUES_PER_PAGE]
    assert f'href="/queues?after={names[QUEUES_PER_PAGE - 1]}"' in first
    last = (await http.get(f"/queues?after={names[QUEUES_PER_PAGE - 1]}")).text
    assert re.findall(r'data-queue="([^"]+)"', last) == names[QUEUES_PER_PAGE:]
    assert "/queues?after=" not in last and 'href="/queues"' in last
    for garbage in ("bad%20name", "x" * 129, "%00"):  # not a queue name: the first page
        page = await http.get(f"/queues?after={garbage}")
        assert page.status_code == 200 and 'data-queue="q0000"' in page.text


async def test_signing_in_roles_and_queue_scopes(dash_auth: Dashboard) -> None:
    dash = dash_auth
    job = await enqueue(dash, schedule=later())
    billing = await enqueue(dash, schedule=later(), queue="billing")
    async with httpx.AsyncClient(base_url=dash.url) as anon:
        reply = await anon.get(f"/jobs/{job.id}")
        assert reply.status_code == 303 and reply.headers["location"].startswith("/signin?next=")
        csrf = await csrf_of(anon, "/signin")
        wrong = await anon.post("/signin", data={"token": "guess", "csrf_token": csrf})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert (
            await anon.post(f"/jobs/{job.id}/cancel", data={"csrf_token": csrf})
        ).status_code == 401
    async with httpx.AsyncClient(base_url=dash.url) as reader:
        await csrf_of(reader, "/signin")
        before = reader.cookies.get("jobwheel_session")
        await sign_in(reader, dash.token("rita"))
        assert reader.cookies.get("jobwheel_session") != before  # a new session at sign-in
        page = await reader.get(f"/jobs/{job.id}")
        assert page.status_code == 200 and "rita" in page.text
        assert f"/jobs/{job.id}/cancel" not in page.text  # no action buttons
        assert "/jobs/bulk/" not in (await reader.get("/jobs?task=test.echo")).text
        assert "Pause…" not in (await reader.get("/queues")).text
        token = CSRF(page.text)
        refused = await reader.post(f"/jobs/{job.id}/cancel", data={"csrf_token": token})
        assert refused.status_code == 403
        assert (await reader.get(f"/jobs/{job.id}/cancel")).status_code == 403
        refused = await reader.post("/queues/default/pause", data={"csrf_token": token})
        assert refused.status_code == 403
        assert (await reader.post("/signout", data={"csrf_token": token})).status_code == 303
        assert (await reader.get("/jobs")).status_code == 303  # signed out
    got = (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_SCHEDULED
    async with httpx.AsyncClient(base_url=dash.url) as scoped:
        await sign_in(scoped, dash.token("bill"))
        listing = (await scoped.get("/jobs")).text
        assert billing.id in listing and job.id not in listing
        assert (await scoped.get(f"/jobs/{job.id}")).status_code == 404
        token = CSRF((await scoped.get(f"/jobs/{billing.id}")).text)
        assert (
            await scoped.post(f"/jobs/{job.id}/pause", data={"csrf_token": token})
        ).status_code == 404
        assert (
            await scoped.post(f"/jobs/{billing.id}/pause", data={"csrf_token": token})
        ).status_code == 303


def CSRF(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


async def test_a_dashboard_address_in_use_stops_the_start(dash: Dashboard, tmp_path: Any) -> None:
    from jobwheel.server.app import App
    from jobwheel.server.config import Settings
    from jobwheel.server.startup import StartupError

    taken = dash.url.removeprefix("http://")
    (tmp_path / "other").mkdir()
    app = App(
        Settings(
            listen="127.0.0.1:0",
            http_listen=taken,
            db=f"sqlite:///{tmp_path / 'other' / 'j.db'}",
        )
    )
    with pytest.raises(StartupError, match=f"cannot listen on {taken}"):
        await app.start()


async def test_payload_filters_search_a_window_of_jobs_per_page(
    dash: Dashboard, http: httpx.AsyncClient, monkeypatch: Any
) -> None:
    from jobwheel.server.web import pages

    monkeypatch.setattr(pages, "SCAN_WINDOW", 3)
    old = await enqueue(dash, schedule=later(), payload={"who": "ann"})
    for _ in range(5):
        await enqueue(dash, schedule=later(), payload={"who": "bob"})
    first = (await http.get("/jobs?payload=who%3Dann")).text
    assert old.id not in first and 'id="searched"' in first
    older = re.search(r'href="/jobs\?(payload=[^"]*after=\d+)"', first)
    assert older
    # following "Older" reaches it
    path = "/jobs?" + older.group(1).replace("&amp;", "&")
    for _ in range(3):
        page = (await http.get(path)).text
        if old.id in page:
            break
        found = re.search(r'href="/jobs\?(payload=[^"]*after=\d+)"', page)
        assert found
        path = "/jobs?" + found.group(1).replace("&amp;", "&")
    else:
        raise AssertionError("never reached the older job")
