"""The dashboard in a real browser (Debian's Chromium through Playwright)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.integration.api.waiting import wait_for_state
from tests.integration.web.conftest import Dashboard
from tests.integration.web.test_http import SCRIPT, enqueue, later

pytestmark = pytest.mark.slow
WAIT_MS = 15_000


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context; fails the test on any script error or CSP violation."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    tab = await context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and "status of 4" not in msg.text
            else None
        ),
    )
    tab.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    tab.set_default_timeout(WAIT_MS)
    try:
        yield tab
    finally:
        await context.close()
    assert problems == []


def row(page: Any, job_id: str) -> Any:
    return page.locator(f'tr[data-id="{job_id}"]')


async def test_filter_the_list_and_open_a_job(dash: Dashboard, page: Any) -> None:
    echo = await enqueue(dash, schedule=later(), payload={"to": "ann"}, labels={"team": "a"})
    noop = await enqueue(dash, "test.noop", schedule=later(), labels={"team": "b"})
    await page.goto(f"{dash.url}/jobs")
    await row(page, echo.id).wait_for()
    await row(page, noop.id).wait_for()
    await page.fill('input[name="label"]', "team=b")
    await page.click("text=Apply filter")
    await page.wait_for_url("**/jobs?label=team%3Db")
    await row(page, noop.id).wait_for()
    assert await row(page, echo.id).count() == 0
    # the state toggles and the payload filter
    await page.goto(f"{dash.url}/jobs")
    await page.click("label.toggle:has(input[value=scheduled])")
    await page.fill('input[name="payload"]', "to=ann")
    await page.click("text=Apply filter")
    await row(page, echo.id).wait_for()
    assert await row(page, noop.id).count() == 0
    await row(page, echo.id).locator("a").click()
    await page.wait_for_url(f"**/jobs/{echo.id}")
    assert await page.locator("h1").inner_text() == f"Job {echo.id}"
    assert '"to": "ann"' in await page.locator("#payload").inner_text()
    # the payload folds
    await page.click("text=1 field(s)")
    assert not await page.locator("#payload").is_visible()


async def test_a_queued_job_turns_completed_without_a_reload(dash: Dashboard, page: Any) -> None:
    await dash.jobs.PauseQueue(pb.PauseQueueRequest(name="live"))
    job = await enqueue(dash, queue="live")
    await page.goto(f"{dash.url}/jobs?queue=live")
    await row(page, job.id).locator(".state-queued").wait_for()
    await page.locator("#live-status[data-state=live]").wait_for()
    await page.evaluate("window.notReloaded = true")
    await dash.jobs.ResumeQueue(pb.ResumeQueueRequest(name="live"))
    await row(page, job.id).locator(".state-completed").wait_for()
    # a new job appears at the top too
    newer = await enqueue(dash, queue="live")
    await row(page, newer.id).wait_for()
    first = page.locator("#jobs-table tbody tr").first
    assert await first.get_attribute("data-id") == newer.id
    assert await page.evaluate("window.notReloaded") is True


async def test_cancel_a_running_job(dash: Dashboard, page: Any) -> None:
    job = await enqueue(dash, "test.hang")
    await wait_for_state(dash.jobs, job.id, (job_pb2.JOB_STATE_RUNNING,))
    await page.goto(f"{dash.url}/jobs/{job.id}")
    await page.locator(".summary .state-running").wait_for()
    await page.click("text=Cancel…")
    await page.fill('input[name="reason"]', "stuck on a remote call")
    await page.click("button:has-text('Cancel job')")
    await page.wait_for_url(f"**/jobs/{job.id}?done=cancel")
    await page.locator(".summary .state-cancelled").wait_for()
    assert "stuck on a remote call" in await page.locator(".facts").inner_text()
    got = (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
    assert got.state == job_pb2.JOB_STATE_CANCELLED
    # the attempt shows how it ended
    assert "CANCELLED" in await page.locator("table.attempts").inner_text()


async def test_a_forged_action_without_the_csrf_token_is_refused(
    dash: Dashboard, page: Any
) -> None:
    job = await enqueue(dash, schedule=later())
    await page.goto(f"{dash.url}/jobs/{job.id}")
    status = await page.evaluate(
        """async (id) => (await fetch(`/jobs/${id}/delete`, {method: "POST",
            headers: {"content-type": "application/x-www-form-urlencoded"},
            body: "next=/jobs"})).status""",
        job.id,
    )
    assert status == 403
    assert (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.id == job.id


async def test_sign_in_and_a_reader_sees_no_action_buttons(dash_auth: Dashboard, page: Any) -> None:
    dash = dash_auth
    job = await enqueue(dash, schedule=later())
    await page.goto(f"{dash.url}/jobs/{job.id}")
    await page.wait_for_url("**/signin?next=*")
    await page.fill('input[name="token"]', "not-a-token")
    await page.click("button:has-text('Sign in')")
    await page.locator("text=That token is not valid.").wait_for()
    await page.fill('input[name="token"]', dash.token("rita"))
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(f"**/jobs/{job.id}")  # back where the reader was going
    assert "rita" in await page.locator(".who").inner_text()
    assert await page.locator(".actions a").count() == 0
    await page.goto(f"{dash.url}/jobs?task=test.echo")
    assert await page.locator(".bulk").count() == 0
    await page.goto(f"{dash.url}/queues")
    assert await page.locator(".row-actions").count() == 0
    # the server refuses what the page does not offer, even with a valid CSRF token
    status = await page.evaluate(
        """async (id) => {
            const token = document.querySelector('input[name=csrf_token]').value;
            return (await fetch(`/jobs/${id}/cancel`, {method: "POST",
                headers: {"x-csrf-token": token}})).status; }""",
        job.id,
    )
    assert status == 403
    assert (await dash.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.state == (
        job_pb2.JOB_STATE_SCHEDULED
    )
    # an operator does get the buttons
    await page.click("text=Sign out")
    await page.wait_for_url("**/signin")
    await page.fill('input[name="token"]', dash.token("otto"))
    await page.click("button:has-text('Sign in')")
    await page.goto(f"{dash.url}/jobs/{job.id}")
    assert await page.locator(".actions a").count() > 0


async def test_a_script_payload_is_shown_as_text(dash: Dashboard, page: Any) -> None:
    job = await enqueue(dash, schedule=later(), payload={"html": SCRIPT}, labels={"x": SCRIPT[:60]})
    await page.goto(f"{dash.url}/jobs/{job.id}")
    assert SCRIPT in await page.locator("#payload").inner_text()
    await page.goto(f"{dash.url}/jobs")
    assert SCRIPT[:60] in await row(page, job.id).inner_text()
    # the page fixture fails the test had any alert() run


async def test_every_page_renders_without_script_errors(dash: Dashboard, page: Any) -> None:
    job = await enqueue(
        dash, "test.echo", schedule=job_pb2.Schedule(cron="*/5 * * * *", time_zone="Asia/Tokyo")
    )
    done = await enqueue(dash, "test.boom", retry_policy=job_pb2.RetryPolicy(max_attempts=1))
    await wait_for_state(dash.jobs, done.id)
    for path in ("/overview", "/overview?window=day", "/queues", "/recurring", f"/jobs/{job.id}"):
        await page.goto(f"{dash.url}{path}")
        await page.wait_for_load_state("networkidle")
    await page.goto(f"{dash.url}/overview")
    await page.locator("#chart-throughput canvas").wait_for()
    await page.goto(f"{dash.url}/recurring")
    await row(page, job.id).wait_for()
    await page.goto(f"{dash.url}/jobs/{job.id}")
    assert await page.locator("table.fires tbody tr").count() == 10
    assert "JST" in await page.locator("table.fires").inner_text()
