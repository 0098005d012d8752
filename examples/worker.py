"""A remote worker with the Python SDK: it leases `resize_image` jobs from the server.

    python examples/worker.py            # $JOBWHEEL_SERVER, else 127.0.0.1:50051

It logs where it connects and what it serves, runs up to 4 jobs at once, reports progress,
and on SIGTERM or Ctrl-C lets running jobs finish (up to 30 s) before it exits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobwheel.client.worker import JobContext, JobFailed, Worker

worker = Worker(queues=["images"], concurrency=4)


@worker.task("resize_image")
async def resize_image(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    width = payload.get("width")
    if not isinstance(width, int) or width <= 0:
        raise JobFailed(f"width must be a positive integer, not {width!r}", retryable=False)
    for step in range(1, 4):
        await asyncio.sleep(0.1)  # the real work would go here
        ctx.report_progress({"step": step, "of": 3})
    return {"url": f"https://img.example.com/{ctx.job_id}-{width}.png"}


if __name__ == "__main__":
    worker.run_forever()
