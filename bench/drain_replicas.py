"""PostgreSQL scale-out: N no-op in-process jobs drained by 1, 2, 3 ... server replicas that
share one database.

    .venv/bin/python -m bench.drain_replicas --db postgresql://postgres@127.0.0.1:5432/postgres \
        --jobs 20000 --replicas 1 2 3 --rounds 1

For each round and replica count: a fresh database (created beside the one in --db and
dropped after), the jobs enqueued into a paused queue, the replicas started with the bench
handlers, then the queue resumed, so every replica is up when the drain begins. The rate is
N over first attempt start -> last attempt end (the servers' clocks, read from the database).
Also printed: the database's CPU seconds per 1,000 jobs (PostgreSQL processes, from /proc; and
of them the backends serving the bench's database, which other databases' load on a shared
server does not blur) beside the servers', which says whether the database saturates first,
and the WAL written per job. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from jobwheel.server.model import JobState
from jobwheel.v1 import job_service_pb2 as pb

from bench import jobs, procs
from bench.handlers import NOOP
from bench.pg import fresh_database, psql


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# The end is polled (the rate comes from the jobs' own times, so a later look changes
# nothing but the load): through the state index, which a count of unfinished jobs over the
# whole table (10 ms, 20 times a second) did not use.
POLL = 0.2
_UNFINISHED = ", ".join(f"'{s.value}'" for s in JobState if not s.terminal)
_ANY_LEFT = f"SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ({_UNFINISHED}))"


def _postgres_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _backends_of(url: str) -> list[int]:
    """The PostgreSQL backends serving the bench's database (not the other databases on a
    shared server, whose load would count in `_postgres_pids`)."""
    pids = psql(url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return [int(p) for p in pids.split()]


def _wal_lsn(url: str) -> int:
    return int(psql(url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"))


async def _load(address: str, n: int) -> None:
    async with jobs.channel(address) as ch:
        stub = jobs.stub(ch)
        await stub.PauseQueue(pb.PauseQueueRequest(name="default"))
        await jobs.enqueue_all(stub, (jobs.request(NOOP, i) for i in range(n)), 1000)


async def _resume(address: str) -> None:
    async with jobs.channel(address) as ch:
        await jobs.stub(ch).ResumeQueue(pb.ResumeQueueRequest(name="default"))


def run_once(admin_url: str, n: int, replicas: int, work: Path) -> str:
    with fresh_database(admin_url, f"bench_replicas_{os.getpid()}") as url:
        with procs.jobwheel_server(
            work / "x.db", work / "loader.log", handlers=False, url=url
        ) as s:
            asyncio.run(_load(s.address, n))
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(
                    procs.jobwheel_server(
                        work / "x.db", work / f"replica{i}.log", handlers=True, url=url
                    )
                )
                for i in range(replicas)
            ]
            pg = _postgres_pids()
            pg_before = _cpu_seconds(pg)
            own_before = {p: _cpu_seconds([p]) for p in _backends_of(url)}
            wal_before = _wal_lsn(url)
            ours_before = _cpu_seconds([s.pid for s in servers])
            asyncio.run(_resume(servers[0].address))
            while psql(url, _ANY_LEFT) == "t":
                time.sleep(POLL)
            pg_cpu = _cpu_seconds(pg) - pg_before
            ours_cpu = _cpu_seconds([s.pid for s in servers]) - ours_before
            own_cpu = sum(_cpu_seconds([p]) - own_before.get(p, 0.0) for p in _backends_of(url))
            wal = _wal_lsn(url) - wal_before
        span = float(psql(url, "SELECT (max(end_time) - min(start_time)) / 1e6 FROM jobs"))
        per_replica = psql(
            url,
            "SELECT string_agg(c::text, '/' ORDER BY c DESC) FROM "
            "(SELECT count(*) AS c FROM attempts GROUP BY worker_id) AS w",
        )
    return (
        f"{replicas} replica(s): {n / span:,.0f} jobs/s ({span:.2f} s); "
        f"CPU s per 1,000 jobs: servers {1000 * ours_cpu / n:.2f}, "
        f"PostgreSQL {1000 * pg_cpu / n:.2f} (this database's backends {1000 * own_cpu / n:.3f}); "
        f"WAL per job {wal / n:,.0f} bytes (whole server); "
        f"attempts per replica {per_replica}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for k in args.replicas:
                print(f"round {r + 1}: " + run_once(args.db, args.jobs, k, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
