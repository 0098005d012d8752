"""The dashboard's HTTP surface at its edges: hostile ids and filters on PostgreSQL and SQLite
(reported or read as text, never a 500), a queue-scoped token's live stream, a return link
that browsers would read as another site."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.conftest import fresh_pg_schema, running_server
from tests.integration.api.waiting import wait_for_state
from tests.integration.web.conftest import Dashboard, sign_in
from tests.integration.web.test_http import enqueue, later


@asynccontextmanager
async def _pg_dashboard() -> AsyncIterator[Dashboard]:
    async with fresh_pg_schema() as url, running_server(url, http_listen="127.0.0.1:0") as srv:
        yield Dashboard(srv.app, f"http://127.0.0.1:{srv.app.http_port}", srv.jobs)


async def _sse(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    async with client.stream("GET", path, headers=headers or {}) as reply:
        assert reply.status_code == 200, path
        fields: dict[str, str] = {}
        async for line in reply.aiter_lines():
            if not line:
                if "event" in fields:
                    yield fields["event"], json.loads(fields["data"])
                fields = {}
                continue
            name, _, value = line.partition(": ")
            fields[name] = value


async def test_pg_malformed_job_ids_are_404_not_500() -> None:
    # README Dashboard: "**Job**: ..." pages; the brief/fuzz rule: no request may crash the
    # server. An id holding NUL is a missing job (404), as on SQLite.
    async with _pg_dashboard() as dash, httpx.AsyncClient(base_url=dash.url, timeout=10) as http:
        for path in ("/jobs/%00", "/jobs/a%00b/cancel", "/jobs/%00/delete"):
            reply = await http.get(path)
            assert reply.status_code == 404, (path, reply.status_code, reply.text[:80])


async def test_pg_hostile_label_and_payload_filters_are_reported_not_500() -> None:
    # README Dashboard: filters by "labels (`team=billing`), payload fields (`customer=acme,
    # n=42`: a value that reads as JSON is that JSON value)"; test_http's rule for hostile
    # filter inputs: "reported, not crashed on" (the page names the bad input).
    async with _pg_dashboard() as dash:
        await enqueue(dash, schedule=later(), payload={"n": 1}, labels={"a": "b"})
        async with httpx.AsyncClient(base_url=dash.url, timeout=10) as http:
            cases = {
                "label=k%3D%00": "label:",
                "label=%00%3Dv": "label:",
                "payload=k%3D%00": "payload:",
                "payload=%00%3D1": "payload:",
                "payload=k%3D%22%5Cu0000%22": "payload:",
            }
            failures = []
            for query, message in cases.items():
                for path in (f"/jobs?{query}", f"/jobs/bulk/cancel?{query}"):
                    reply = await http.get(path)
                    if reply.status_code >= 500 or message not in reply.text:
                        failures.append((path, reply.status_code))
            assert not failures, failures


async def test_numbers_no_payload_holds_are_read_as_text(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    # README Dashboard: payload fields "a value that reads as JSON is that JSON value", and
    # anything else is the text itself: 10**26 (SQLite raised OverflowError: a 500), NaN,
    # -Infinity and 1e999 (PostgreSQL refused them: a 500) match a payload string only
    await enqueue(dash, schedule=later(), payload={"n": "1e999"})
    for value in ("9" * 26, "NaN", "-Infinity", "1e999"):
        for path in (f"/jobs?payload=n%3D{value}", f"/jobs/bulk/cancel?payload=n%3D{value}"):
            reply = await http.get(path)
            assert reply.status_code == 200, (path, reply.status_code)
    listed = await http.get("/jobs?payload=n%3D1e999")
    assert "No jobs match" not in listed.text


async def test_the_live_stream_of_a_queue_scoped_token_hides_other_queues_jobs(
    dash_auth: Dashboard,
) -> None:
    # README Security: "another queue's job is NOT_FOUND (its existence is not revealed)",
    # "watches are filtered to them"; Dashboard: a scoped token "sees ... those only".
    dash = dash_auth
    async with httpx.AsyncClient(base_url=dash.url, timeout=10) as bill:
        await sign_in(bill, dash.token("bill"))
        since = re.search(r'data-since="(\d+)"', (await bill.get("/jobs")).text)
        assert since
        secret = await enqueue(dash, schedule=later())  # queue "default"
        mine = await enqueue(dash, schedule=later(), queue="billing")
        seen: list[str] = []
        stream = _sse(bill, f"/jobs/live?since={since.group(1)}")
        async with asyncio.timeout(10):
            async for event, data in stream:
                if event == "rows":
                    seen += [row["id"] for row in data["rows"]]
                    if mine.id in seen:
                        break
        await stream.aclose()
        assert secret.id not in seen, "the live stream reveals another queue's job id"


async def test_a_next_link_with_a_tab_cannot_lead_to_another_site(
    dash: Dashboard, http: httpx.AsyncClient
) -> None:
    # README Dashboard: "every value is escaped"; safe_next's contract: "a local path to
    # return to after a form; anything else (another site) is '/'". Browsers drop tabs and
    # newlines from a URL (WHATWG URL parsing), so "/<TAB>/evil.example" is "//evil.example".
    job = await enqueue(dash, schedule=later())
    for raw in ("/%09/evil.example", "/%0A/evil.example", "/%0D/evil.example"):
        page = (await http.get(f"/jobs/{job.id}/cancel?next={raw}")).text
        back = re.search(r'<a class="button" href="([^"]*)">Back</a>', page)
        assert back, page[:300]
        as_browser_reads_it = re.sub(r"[\t\n\r]", "", back.group(1))
        assert not as_browser_reads_it.startswith("//"), (raw, back.group(1))


async def test_the_overview_of_a_queue_scoped_token_counts_its_queues_only(
    dash_auth: Dashboard,
) -> None:
    # README Security: "Lists, stats and watches are filtered to them"; the overview counted
    # every queue's jobs, tasks and attempts for a token limited to billing
    dash = dash_auth
    for _ in range(3):
        done = await enqueue(dash, task="test.noop")  # the default queue
        await wait_for_state(dash.jobs, done.id)
    await enqueue(dash, schedule=later(), queue="billing")
    async with httpx.AsyncClient(base_url=dash.url, timeout=10) as bill:
        await sign_in(bill, dash.token("bill"))
        page = (await bill.get("/overview")).text
        data = (await bill.get("/overview/data")).json()
    stored = re.search(r'Jobs stored</span><span class="value">(\d+)<', page)
    assert stored is not None and stored.group(1) == "1"
    assert "test.noop" not in page
    assert sum(data["succeeded"]) == 0 and all(late is None for late in data["lateness_ms"])
    async with httpx.AsyncClient(base_url=dash.url, timeout=10) as admin:
        await sign_in(admin, dash.token("ada"))
        everything = (await admin.get("/overview")).text
        assert sum((await admin.get("/overview/data")).json()["succeeded"]) == 3
    assert "test.noop" in everything


async def test_a_revoked_token_ends_its_open_live_stream(dash_auth: Dashboard) -> None:
    # README Security: removing a token "ends its sessions at once": an open live stream too,
    # which went on sending rows of new jobs
    dash = dash_auth
    assert dash.tokens is not None
    async with httpx.AsyncClient(base_url=dash.url, timeout=10) as otto:
        await sign_in(otto, dash.token("otto"))
        since = re.search(r'data-since="(\d+)"', (await otto.get("/jobs")).text)
        assert since
        first = await enqueue(dash, schedule=later())
        stream = _sse(otto, f"/jobs/live?since={since.group(1)}")
        seen: list[tuple[str, Any]] = []
        async with asyncio.timeout(10):
            async for event, data in stream:
                seen.append((event, data))
                if event == "rows" and first.id in [r["id"] for r in data["rows"]]:
                    break
            dash.tokens.remove("otto")
            await asyncio.sleep(0.05)
            after = await enqueue(dash, schedule=later())
            async for event, data in stream:
                seen.append((event, data))
                if event != "ping":
                    break
        await stream.aclose()
    assert seen[-1] == ("reset", {"reason": "signed out"})
    assert after.id not in json.dumps(seen)
