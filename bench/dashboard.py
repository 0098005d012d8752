"""The dashboard's jobs page among many jobs, and its live stream under load.

    python -m bench.dashboard [--n 1000000] [--rate 100] [--seconds 10]

Fills a fresh SQLite database through the store with N jobs (8 states, 10 queues, 50 tasks,
a label and a payload field each), starts a server on it with the dashboard (port 0), and
reads the server's own Server-Timing figure (from the request's arrival to the response
start) for the jobs page with each kind of filter, first and deeper pages. Then it enqueues
`--rate` jobs per second that complete at once (about 3 changes each) while a live stream is
open, and prints how many messages and rows the stream sent and the page times under that
load, and, where Chromium is installed, what the live jobs page in Chromium sees meanwhile
(long tasks, how long the main thread makes a queued task wait). Not a test: figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from jobwheel.server import model
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.server.ids import new_id
from jobwheel.server.storage import open_store

# states the engine leaves alone (no dispatch, no lease recovery): the figures are the page's
STATES = [
    model.JobState.COMPLETED,
    model.JobState.FAILED,
    model.JobState.CANCELLED,
    model.JobState.SCHEDULED,
    model.JobState.PAUSED,
]
QUEUES = [f"queue{i}" for i in range(10)]
TASKS = [f"task{i}" for i in range(50)]


def new_job(now: int, rng: random.Random) -> model.NewJob:
    return model.NewJob(
        id=new_id(),
        queue=rng.choice(QUEUES),
        task=rng.choice(TASKS),
        payload={"customer": f"c{rng.randrange(1000)}", "n": rng.randrange(100)},
        labels={"team": f"t{rng.randrange(20)}"},
        priority=0,
        state=rng.choice(STATES),
        schedule=None,
        retry_policy=model.RetryPolicy(),
        timeout=None,
        idempotency_key=None,
        http=None,
        create_time=now,
        next_run_time=now + (30 + rng.randrange(300)) * 86_400 * model.SECOND,
    )


async def fill(url: str, n: int) -> None:
    store = await open_store(url, sqlite_synchronous="OFF")
    rng = random.Random(1)
    started = time.perf_counter()
    start = time.time_ns() // 1000 - n * 1000
    for done in range(0, n, 10_000):
        now = start + done * 1000
        await store.insert_jobs(
            [new_job(now + i * 1000, rng) for i in range(min(10_000, n - done))]
        )
    await store.close()
    print(f"filled {n:,} jobs in {time.perf_counter() - started:.0f} s")


def server_ms(reply: httpx.Response) -> float:
    found = re.search(r"dur=([\d.]+)", reply.headers.get("server-timing", ""))
    assert reply.status_code == 200 and found, (reply.status_code, reply.text[:200])
    return float(found.group(1))


async def timed(http: httpx.AsyncClient, path: str, repeat: int = 9) -> tuple[float, float]:
    times = [server_ms(await http.get(path)) for _ in range(repeat)]
    return statistics.median(times), max(times)


async def pages(http: httpx.AsyncClient, label: str) -> None:
    first = (await http.get("/jobs")).text
    cursor = re.search(r"after=(\d+)", first)
    middle = int(cursor.group(1)) // 2 if cursor else 1
    some_id = re.search(r'data-id="([0-9a-f-]{36})"', first)
    assert some_id
    cases = {
        "no filter": "/jobs",
        "second page": f"/jobs?after={cursor.group(1) if cursor else 1}",
        "page in the middle": f"/jobs?after={middle}",
        "state=failed": "/jobs?state=failed",
        "state=failed, middle": f"/jobs?state=failed&after={middle}",
        "queue": "/jobs?queue=queue3",
        "task": "/jobs?task=task7",
        "task+state": "/jobs?task=task7&state=paused",
        "label team=t5": "/jobs?label=team%3Dt5",
        "payload customer=c42": "/jobs?payload=customer%3Dc42",
        "id": f"/jobs?id={some_id.group(1)}",
        "id prefix (8)": f"/jobs?id={some_id.group(1)[:8]}",
        "id prefix (13)": f"/jobs?id={some_id.group(1)[:13]}",
        "id prefix, no match": "/jobs?id=ffff",
        "payload, no match": "/jobs?payload=customer%3Dnobody",
        "created range": "/jobs?created_from=2000-01-01T00:00&created_to=2100-01-01T00:00",
    }
    for path in cases.values():  # warm the page cache once
        await http.get(path)
    print(f"\n{label}: jobs page, server time in ms (median / max of 9)")
    for name, path in cases.items():
        median, worst = await timed(http, path)
        print(f"  {name:24s} {median:8.1f} {worst:8.1f}")


async def load(app: App, http: httpx.AsyncClient, rate: int, seconds: float) -> None:
    import grpc
    from jobwheel.v1 import job_service_pb2 as pb
    from jobwheel.v1 import job_service_pb2_grpc

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    messages = rows = 0
    head = re.search(r'data-since="(\d+)"', (await http.get("/jobs")).text)
    assert head

    async def listen() -> None:
        nonlocal messages, rows
        async with http.stream("GET", f"/jobs/live?since={head.group(1)}") as reply:
            async for line in reply.aiter_lines():
                if line.startswith('data: {"rows"'):
                    messages += 1
                    rows += line.count('"seq"')

    async def produce() -> None:
        # a tenth of the rate every 100 ms, in one call
        batch = pb.BatchEnqueueJobsRequest(
            jobs=[pb.EnqueueJobRequest(task="bench.noop", queue="live")] * max(1, rate // 10)
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            tick = time.monotonic()
            await stub.BatchEnqueueJobs(batch)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))

    browser = await open_browser(str(http.base_url) + "/jobs?queue=live")
    listener = asyncio.create_task(listen())
    producer = asyncio.create_task(produce())
    page_times: list[float] = []
    waits: list[float] = []
    while not producer.done():
        page_times.append(server_ms(await http.get("/jobs")))
        if browser is not None:
            waits.append(await browser[2].evaluate(MAIN_THREAD_WAIT))  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
    await asyncio.sleep(1)
    listener.cancel()
    await channel.close()
    print(
        f"\nlive stream with {rate} jobs/s enqueued (each ~3 changes) for {seconds:.0f} s: "
        f"{messages} messages ({messages / seconds:.1f}/s), {rows} rows; jobs page meanwhile "
        f"median {statistics.median(page_times):.1f} ms, max {max(page_times):.1f} ms"
    )
    if browser is not None:
        await report_browser(*browser, waits)


CHROMIUM = "/usr/bin/chromium"
# long tasks (main thread busy > 50 ms) seen by the page, and how long a click waits
LONG_TASKS = """
window.longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


async def open_browser(url: str) -> tuple[object, object, object] | None:
    """Chromium showing the live jobs page, or None without Chromium/Playwright."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        return None
    if not shutil.which(CHROMIUM):
        return None
    pw = await async_playwright().start()
    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = await browser.new_page()
    await page.add_init_script(LONG_TASKS)
    await page.goto(url)
    await page.locator("#live-status[data-state=live]").wait_for()
    return pw, browser, page


# how long a task queued now waits for the main thread (what a click would wait)
MAIN_THREAD_WAIT = """() => new Promise((done) => { const t = performance.now();
    setTimeout(() => done(performance.now() - t), 0); })"""


async def report_browser(pw: Any, browser: Any, page: Any, waits: list[float]) -> None:
    tasks = await page.evaluate("window.longTasks")
    rows = await page.locator("#jobs-table tbody tr").count()
    print(
        f"browser (Chromium) on the live page: {len(tasks)} long tasks (> 50 ms), longest "
        f"{max(tasks, default=0):.0f} ms; main-thread wait during the load median "
        f"{statistics.median(waits):.1f} ms, max {max(waits):.1f} ms; {rows} rows shown"
    )
    await browser.close()
    await pw.stop()


async def main(n: int, rate: int, seconds: float) -> None:
    import bench.handlers  # noqa: F401  (registers bench.noop)

    with tempfile.TemporaryDirectory(prefix="jobwheel-bench-dash-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'jobs.db'}"
        await fill(url, n)
        app = App(Settings(listen="127.0.0.1:0", http_listen="127.0.0.1:0", db=url))
        await app.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as http:
                await pages(http, f"{n:,} jobs")
                await load(app, http, rate, seconds)
        finally:
            await app.stop(1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rate, args.seconds))
