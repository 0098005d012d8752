"""Screenshots of every dashboard page, for the README: `make screenshots` (or
`python -m tests.integration.web.screenshots DIR`). A server on free ports gets sample jobs
(real runs, plus an hour of earlier attempt history so the charts have a shape), then
Chromium captures each page into DIR/dashboard-*.png."""

from __future__ import annotations

import asyncio
import math
import random
import sys
import tempfile
import uuid
from pathlib import Path

import grpc
from google.protobuf import duration_pb2, struct_pb2
from jobwheel.server.model import SECOND, JobFilter
from jobwheel.server.storage.schema import attempts
from jobwheel.v1 import job_pb2, worker_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.integration.api.waiting import wait_for_state
from tests.integration.web.conftest import CHROMIUM, Dashboard, TokensFile, dashboard_server
from tests.integration.web.test_http import enqueue, later

VIEWPORT = {"width": 1440, "height": 900}


async def sample_jobs(dash: Dashboard) -> dict[str, str]:
    once = job_pb2.RetryPolicy(max_attempts=1)
    for i in range(12):
        await enqueue(
            dash,
            payload={"to": f"user{i}@example.com", "template": "welcome"},
            labels={"team": "growth"},
            queue="emails",
        )
    failed = await enqueue(
        dash, "test.boom", payload={"invoice": 1042}, labels={"team": "billing"}, retry_policy=once
    )
    await enqueue(dash, "test.boom", payload={"invoice": 1043}, queue="billing", retry_policy=once)
    for n in range(3):
        await enqueue(dash, "test.flaky", payload={"succeed_on": 2, "n": n}, queue="billing")
    running = await enqueue(
        dash, "test.hang", payload={"report": "quarterly", "rows": 120000}, queue="reports"
    )
    await enqueue(dash, "send_report", schedule=later(3600), labels={"team": "billing"})
    await enqueue(dash, "send_report", schedule=later(7200), queue="reports")
    digest = await enqueue(
        dash,
        "daily_digest",
        schedule=job_pb2.Schedule(cron="0 9 * * 1-5", time_zone="America/New_York"),
        labels={"team": "growth"},
    )
    await enqueue(
        dash,
        "sync_inventory",
        schedule=job_pb2.Schedule(interval=duration_pb2.Duration(seconds=900)),
        queue="billing",
    )
    await enqueue(
        dash,
        "cleanup",
        schedule=job_pb2.Schedule(cron="30 2 * * *", time_zone="Europe/Berlin"),
        queue="maintenance",
    )
    await dash.jobs.PauseQueue(pb.PauseQueueRequest(name="maintenance"))
    await dash.jobs.UpdateQueue(
        pb.UpdateQueueRequest(name="emails", max_concurrency=20, max_dispatches_per_second=50)
    )
    await wait_for_state(dash.jobs, failed.id)
    await wait_for_state(dash.jobs, running.id, (job_pb2.JOB_STATE_RUNNING,))
    video = await remote_job_with_progress(dash)
    return {"failed": failed.id, "running": running.id, "digest": digest.id, "video": video}


async def remote_job_with_progress(dash: Dashboard) -> str:
    """A job leased by a remote worker that reports its progress."""
    job = await enqueue(dash, "render_video", payload={"video": "launch.mp4"}, queue="media")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{dash.app.port}") as channel:
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        leased = await workers.LeaseJobs(
            wpb.LeaseJobsRequest(
                worker_id="render-01",
                queues=["media"],
                tasks=["render_video"],
                max_jobs=1,
                lease_duration=duration_pb2.Duration(seconds=600),
            )
        )
        [lease] = leased.leases
        progress = struct_pb2.Struct()
        progress.update({"percent": 62, "stage": "encoding", "frames": "7440 / 12000"})
        await workers.HeartbeatJob(
            wpb.HeartbeatJobRequest(
                job_id=job.id,
                epoch=lease.epoch,
                worker_id="render-01",
                lease_duration=duration_pb2.Duration(seconds=600),
                progress=progress,
            )
        )
    return job.id


async def earlier_history(dash: Dashboard) -> None:
    """An hour of attempt history for the overview's charts, attached to a finished job."""
    store = dash.app.store
    assert store is not None
    [job] = await store.list_jobs(JobFilter(tasks=("test.echo",)), limit=1)
    job_id = job.id
    now = dash.app.clock.now()
    rng = random.Random(7)
    rows = []
    for minute in range(60, 0, -1):
        load = 20 + int(15 * (1 + math.sin(minute / 9)))
        for k in range(load):
            end = now - minute * 60 * SECOND + rng.randrange(60 * SECOND)
            duration = int(rng.lognormvariate(11.5, 0.6))
            failed = rng.random() < (0.12 if 20 < minute < 28 else 0.03)
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "job_id": job_id,
                    "execution": 1000 + minute,
                    "number": k + 1,
                    "start_time": end - duration,
                    "end_time": end,
                    "outcome": "failed" if failed else "succeeded",
                }
            )
    async with store.write_engine.begin() as conn:
        await conn.execute(attempts.insert(), rows)


async def capture(out: Path) -> None:
    from playwright.async_api import async_playwright

    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        async with dashboard_server(Path(tmp)) as dash, async_playwright() as pw:
            ids = await sample_jobs(dash)
            await earlier_history(dash)
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport=VIEWPORT)
            shots = {
                "overview": "/overview",
                "jobs": "/jobs",
                "job": f"/jobs/{ids['failed']}",
                "job-running": f"/jobs/{ids['video']}",
                "recurring": "/recurring",
                "queues": "/queues",
                "cancel": f"/jobs/{ids['running']}/cancel",
                "bulk": "/jobs/bulk/retry?state=failed",
            }
            for name, path in shots.items():
                await page.goto(dash.url + path)
                await page.wait_for_load_state("networkidle")
                await page.screenshot(path=out / f"dashboard-{name}.png", full_page=True)
            await browser.close()
        await asyncio.to_thread((Path(tmp) / "auth").mkdir)
        tokens = TokensFile.with_principals(Path(tmp) / "auth" / "tokens.toml")
        async with (
            dashboard_server(Path(tmp) / "auth", tokens) as dash,
            async_playwright() as pw,
        ):
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1000, "height": 560})
            await page.goto(dash.url + "/jobs")
            await page.screenshot(path=out / "dashboard-signin.png")
            await browser.close()
    print(f"screenshots written to {out}/dashboard-*.png")


if __name__ == "__main__":
    asyncio.run(capture(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
