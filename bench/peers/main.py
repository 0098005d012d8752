"""`python -m bench peers`: jobwheel and the peers, the four workloads, alternated over rounds.

Each (system, workload) runs once per round in a fresh subprocess of the system's venv (the
project's .venv for jobwheel and the echo baseline, .bench-peers-venv for the peers, created
and filled from PyPI on first use), against a fresh PostgreSQL database (created and dropped
here) or a flushed Redis db of its own. Systems change order every round; the table shows
the median of the rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import env as machine
from bench import procs
from bench.cpu import StealMeter
from bench.peers import adapters, table
from bench.peers.spec import WORKLOADS, Adapter, Env, Result, Sizes

VENV = procs.ROOT / ".bench-peers-venv"
# Celery pinned where its Redis client overlaps arq's; redis capped at what kombu[redis] 5.5
# accepts, or pip backtracks into kombu releases whose setup no longer runs
PACKAGES = (
    "procrastinate>=3",
    "psycopg[binary]>=3.1",
    "pgqueuer>=0.19",
    "asyncpg>=0.29",
    "rq>=1.16",
    "arq>=0.26",
    "dramatiq[redis]>=1.16",
    "huey>=2.5",
    "redis>=5,<=5.2.1",
    "celery[redis]>=5.4,<5.6",
    "apscheduler>=3.10,<4",
)
# a run is named under the table when the host took this much of the machine's CPU time
# meanwhile, on average or in its worst half second
STOLEN_AVERAGE, STOLEN_PEAK = 0.05, 0.20
QUICK = Sizes(enqueues=2_000, batched=10_000, drained=2_000, fires=200)


def ensure_venv() -> Path:
    """The peers' venv with PACKAGES installed (skipped when its stamp lists the same ones)."""
    python, stamp = VENV / "bin" / "python", VENV / ".bench-peers"
    wanted = "\n".join(PACKAGES)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"[peers] installing the peers into {VENV} ...", file=sys.stderr)
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
    stamp.write_text(wanted)
    return python


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def psql(base_url: str, sql: str) -> None:
    subprocess.run(["psql", base_url, "-q", "-c", sql], check=True, capture_output=True)


def run_bounded(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """Runs argv in a session of its own; past `timeout` the whole group (servers and workers
    it started included) is killed and TimeoutExpired raised."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


class Runner:
    def __init__(self, args: argparse.Namespace, peers_python: Path | None) -> None:
        self.args = args
        self.pythons = {"project": Path(sys.executable), "peers": peers_python}
        self.workdir = Path(tempfile.mkdtemp(prefix="jobwheel-bench-peers-"))
        self.sizes = QUICK if args.quick else Sizes()
        self.failures: list[str] = []
        self.stolen: list[str] = []  # runs during which the host took much of the CPU
        self.count = 0

    def once(self, adapter: Adapter, workload: str) -> Result:
        python = self.pythons[adapter.venv]
        if python is None:
            return {}
        self.count += 1
        work = self.workdir / f"{self.count:03d}-{workload}"
        work.mkdir()
        db = f"bench_peers_{os.getpid()}_{self.count}"
        postgres = adapter.needs == "postgres"
        if postgres:
            psql(self.args.postgres, f"CREATE DATABASE {db}")
        url = self.args.postgres.rsplit("/", 1)[0] + f"/{db}" if postgres else ""
        spec = {
            "adapter": adapter.name,
            "workload": workload,
            "sizes": dataclasses.asdict(self.sizes),
            "env": dataclasses.asdict(Env(str(work), url, self.args.redis)),
        }
        print(f"[peers] {adapter.name} {workload} ...", file=sys.stderr)
        run_env = {**os.environ, "PYTHONPATH": str(procs.ROOT), "BENCH_REDIS_URL": self.args.redis}
        try:
            with StealMeter() as steal:
                code, out, err = run_bounded(
                    [str(python), "-m", "bench.peers.runner", json.dumps(spec)],
                    run_env,
                    self.args.timeout,
                )
            if steal.average >= STOLEN_AVERAGE or steal.peak >= STOLEN_PEAK:
                self.stolen.append(f"{adapter.name} {workload}: {steal}")
            lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
            if code or not lines:
                tail = (err or out).strip().splitlines()[-1:]
                raise RuntimeError(tail[0] if tail else f"exit {code}")
            return dict(json.loads(lines[-1].removeprefix("RESULT ")))
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            self.failures.append(f"{adapter.name} {workload}: {e}")
            return {"rate": math.nan, "p99": math.nan}
        finally:
            if postgres:
                psql(self.args.postgres, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")

    def rounds(self, systems: list[Adapter], workloads: list[str]) -> table.Runs:
        runs: table.Runs = {}
        for r in range(self.args.rounds):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            for workload in workloads:
                for adapter in order:
                    if workload in adapter.hooks:
                        result = self.once(adapter, workload)
                        if result:
                            runs.setdefault((adapter.name, workload), []).append(result)
        return runs


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench peers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, one round: a smoke run")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    parser.add_argument("--only", action="append", help="systems whose name contains this")
    parser.add_argument("--workload", action="append", choices=WORKLOADS, help="default: all")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="a db of its own")
    parser.add_argument("--timeout", type=float, help="seconds per run (default 900; quick 180)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.timeout = args.timeout or (180 if args.quick else 900)
    return args


def versions(python: Path) -> str:
    names = ["procrastinate", "pgqueuer", "celery", "rq", "arq", "dramatiq", "huey", "APScheduler"]
    code = "from importlib.metadata import version as v;print(', '.join(f'{n} {v(n)}' for n in %r))"
    done = subprocess.run([str(python), "-c", code % names], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()


def main(argv: list[str]) -> None:
    args = parse(argv)
    started = time.monotonic()
    systems = [a for a in adapters() if not args.only or any(o in a.name for o in args.only)]
    services = {
        "postgres": reachable("127.0.0.1", 5432) and shutil.which("psql") is not None,
        "redis": reachable("127.0.0.1", 6379),
    }
    skipped = [a.name for a in systems if a.needs and not services[a.needs]]
    systems = [a for a in systems if a.name not in skipped]
    peers_python = ensure_venv() if any(a.venv == "peers" for a in systems) else None
    runner = Runner(args, peers_python)
    try:
        with StealMeter() as steal:
            runs = runner.rounds(systems, args.workload or list(WORKLOADS))
    finally:
        if peers_python is not None and services["redis"]:  # leave the db as found: empty
            flush = "import redis, sys; redis.Redis.from_url(sys.argv[1]).flushdb()"
            subprocess.run([str(peers_python), "-c", flush, args.redis], check=False)
        if not args.keep:
            shutil.rmtree(runner.workdir, ignore_errors=True)
    medians = {key: table.median(results) for key, results in runs.items()}
    print()
    print("\n".join(machine.describe()))
    if peers_python is not None:
        print(f"peers: {versions(peers_python)}")
    print(f"sizes: {runner.sizes}, rounds: {args.rounds} (median)")
    print(f"command: python -m bench peers {' '.join(argv)}".rstrip())
    print()
    print(table.render([(a.name, a.backend) for a in systems], medians))
    print(
        "\nratios: jobs/s over the best reference peer's; W4: the reference's p99 over ours "
        "(> 1: jobwheel ahead). '-': the system has no such workload."
    )
    for note in [
        f"the whole run: {steal}",
        *(f"skipped (its service is unreachable): {s}" for s in skipped),
        *runner.failures,
        *runner.stolen,
    ]:
        print(f"- {note}")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
