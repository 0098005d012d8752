"""`python -m bench`: every scenario in one run, printed as one table with its baselines.

Servers run as subprocesses (jobwheel-server, the echo baseline, huey_consumer); this process
is the client. On a 2-core machine client and server each get about one core while a
closed-loop RPC scenario runs; during drains and fire-lateness runs the client only polls.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from bench import (
    batch_enqueue,
    drain,
    enqueue_rpc,
    env,
    lateness,
    metrics_cost,
    profile,
    read_rpc,
    watch,
)
from bench.cpu import StealMeter
from bench.options import Options
from bench.pg import fresh_database
from bench.report import Row, notes, table

Scenario = Callable[[Options], Awaitable[list[Row]]]
SCENARIOS: dict[str, Scenario] = {
    "enqueue": enqueue_rpc.run,
    "batch": batch_enqueue.run,
    "read": read_rpc.run,
    "drain": drain.run,
    "lateness": lateness.run,
    "watch": watch.run,
    "metrics": metrics_cost.run,
}
# the scenarios whose one jobwheel server runs on --postgres when it is given
ON_POSTGRES = ("enqueue", "batch", "read", "drain", "lateness")


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument("--quick", action="store_true", help="smaller N, shorter windows")
    parser.add_argument("--n", type=int, help="jobs per drain (default 20,000; quick 5,000)")
    parser.add_argument("--seconds", type=float, help="window per throughput figure (default 5)")
    parser.add_argument("--callers", type=int, default=64, help="concurrent EnqueueJob callers")
    parser.add_argument("--huey-workers", type=int, default=4, help="huey's thread workers")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the servers with py-spy into DIR and print their hotspots",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run jobwheel on PostgreSQL in the " + ", ".join(ON_POSTGRES) + " scenarios: "
        "a fresh database per scenario beside the one URL names, dropped after "
        "(watch and metrics stay on SQLite)",
    )
    parser.add_argument("--keep", action="store_true", help="keep databases and server logs")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="jobwheel-bench-"))
    opts = Options(
        workdir=workdir,
        seconds=args.seconds or (2.0 if args.quick else 5.0),
        callers=args.callers,
        drain_jobs=args.n or (5_000 if args.quick else 20_000),
        huey_workers=args.huey_workers,
        loaded_fires=5_000 if args.quick else 10_000,
        loaded_span=2.5 if args.quick else 5.0,
        profile=args.profile,
    )
    return args, opts


async def run(names: list[str], opts: Options, postgres: str | None = None) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        with StealMeter() as steal:
            if postgres is None or name not in ON_POSTGRES:
                got = await SCENARIOS[name](opts)
            else:
                with fresh_database(postgres, f"jobwheel_bench_{os.getpid()}_{name}") as url:
                    got = await SCENARIOS[name](dataclasses.replace(opts, db_url=url))
                for row in got:
                    row.scenario += " [PostgreSQL]"
        for row in got:
            row.notes.append(f"during the scenario, {steal}")
        rows += got
    return rows


def main(argv: list[str] | None = None) -> None:
    rest = sys.argv[1:] if argv is None else argv
    if rest[:1] == ["peers"]:  # python -m bench peers: jobwheel beside the Python peers
        from bench.peers.main import main as peers

        return peers(rest[1:])
    args, opts = parse(argv)
    names = args.only or list(SCENARIOS)
    started = time.monotonic()
    try:
        rows = asyncio.run(run(names, opts, args.postgres))
    finally:
        if args.keep:
            print(f"databases and logs kept in {opts.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(opts.workdir, ignore_errors=True)
    print()
    print("\n".join(env.describe()))
    print(
        "layout: servers in subprocesses, this process the client; client and server share "
        "the machine's cores (closed-loop RPC scenarios: about one core each; drain and "
        "lateness: the client only polls)"
    )
    if args.postgres:
        on = ", ".join(n for n in names if n in ON_POSTGRES)
        print(f"jobwheel on PostgreSQL ({make_url(args.postgres).host}) in: {on or 'none'}")
    print(f"command: python -m bench {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print()
    print(table(rows))
    if text := notes(rows):
        print()
        print(text)
    if opts.profile is not None:
        for path in sorted(opts.profile.glob("*.txt")):
            print(f"\nhotspots of the server during {path.stem} ({path}):")
            print(profile.hotspots(path))
    print(f"\n(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
