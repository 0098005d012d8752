"""A worker process for the fencing tests, which stop, resume and kill it.

python -m tests.integration.workers.worker_main ADDRESS WORKER_ID LEASE_SECONDS MARKER_DIR

It runs "fence.work" jobs: it writes MARKER_DIR/<worker id>.started, sleeps for
payload["sleep"][<worker id>] seconds and returns {"by": <worker id>}.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from jobwheel.client.worker import JobContext, Worker


def main() -> None:
    address, worker_id, lease, markers = sys.argv[1:5]
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    # One job at a time: with a free slot its long-poll would lease jobs while it is stopped.
    worker = Worker(
        address, worker_id=worker_id, lease_duration=float(lease), poll_wait=5.0, concurrency=1
    )

    @worker.task("fence.work")
    async def work(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
        (Path(markers) / f"{worker_id}.started").write_text(f"{ctx.job_id} {ctx.attempt}")
        await asyncio.sleep(payload["sleep"][worker_id])
        return {"by": worker_id}

    worker.run_forever()


if __name__ == "__main__":
    main()
