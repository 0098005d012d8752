"""huey (SqliteHuey, its own consumer with thread workers) draining N pre-enqueued no-ops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from bench import procs
from bench.options import Options


@dataclass(frozen=True)
class HueyDrain:
    jobs: int
    seconds: float  # first start -> N-th completion
    enqueue_per_s: float

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds


def drain(opts: Options, n: int, workers: int) -> HueyDrain:
    db, done = opts.db(f"huey-{workers}"), opts.workdir / f"huey-{workers}.done.json"
    settings = {"BENCH_HUEY_DB": str(db), "BENCH_HUEY_EXPECT": str(n), "BENCH_HUEY_DONE": str(done)}
    env = {**os.environ, **settings, "PYTHONPATH": str(procs.ROOT)}
    producer = f"import bench.huey_tasks as t; print(t.enqueue({n}))"
    enqueued = subprocess.run(
        [sys.executable, "-c", producer], env=env, check=True, capture_output=True, text=True
    )
    enqueue_per_s = float(enqueued.stdout.strip().splitlines()[-1])
    argv = [str(procs.BIN / "huey_consumer"), "bench.huey_tasks.huey"]
    argv += ["--workers", str(workers), "--worker-type", "thread", "--quiet"]
    argv += ["--no-periodic", "--disable-health-check"]
    with opts.log("huey").open("ab") as log:
        consumer = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 600
        while not done.exists():
            if consumer.poll() is not None:
                raise RuntimeError(f"huey_consumer exited; see {opts.log('huey')}")
            if time.monotonic() > deadline:
                raise TimeoutError("huey did not drain within 600 s")
            time.sleep(0.02)
    finally:
        consumer.terminate()
        consumer.wait(30)
    times = json.loads(done.read_text())
    return HueyDrain(n, times["last_complete"] - times["first_start"], enqueue_per_s)


if __name__ == "__main__":  # python -m bench.huey_peer N WORKDIR WORKERS: huey alone
    from pathlib import Path

    result = drain(Options(workdir=Path(sys.argv[2])), int(sys.argv[1]), int(sys.argv[3]))
    print(f"{result.per_second:,.0f} jobs/s ({result.seconds:.2f} s)")
