"""Server memory and health-check latency while big jobs are listed.

    python -m bench.list_memory [--jobs 200] [--payload-bytes 1000000] [--shape records]
                                [--listers 4] [--rounds 3] [--db URL]

Starts jobwheel-server (port 0, a fresh SQLite file unless --db), enqueues `--jobs` jobs whose
payloads encode to about `--payload-bytes` bytes (a task no handler takes: they stay QUEUED),
then runs `--listers` concurrent clients, each listing every job `--rounds` times with page
size 1000, page after page, while another client calls grpc.health.v1 Check every 50 ms.
The listing clients accept replies of any size, so an unbounded reply shows in the figures
instead of failing. Prints the server's RSS before, at its peak and after the listing, the
reply sizes, and the health-check latencies. Not a test: figures only.

Shapes: "records" is a list of small objects (many protobuf Values per byte, the costly
kind to convert); "string" is one long string.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import job_service_pb2_grpc

from bench.procs import BIN, Subprocess

UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def payload(shape: str, size: int) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if shape == "string":
        out.update({"blob": "x" * (size - 16)})
        return out
    record = {"id": 12345, "name": "item-12345", "tags": ["red", "large"], "price": 9.5}
    one = struct_pb2.Struct()
    one.update({"items": [record]})
    count = max(1, size // one.ByteSize())
    out.update({"items": [record] * count})
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def sample_rss(pid: int, into: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        into.append(rss_mib(pid))
        await asyncio.sleep(0.02)


async def check_health(address: str, into: list[float], stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            t0 = time.perf_counter()
            # a deadline exceeded still counts, with its full wait
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=120)
            into.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.05)


async def list_all(address: str, rounds: int, sizes: list[int], failures: list[str]) -> int:
    """Lists every job `rounds` times; returns the number of jobs seen. A failed call ends
    its round and is recorded."""
    seen = 0
    async with grpc.aio.insecure_channel(address, options=UNLIMITED) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        for _ in range(rounds):
            token = ""
            while True:
                request = pb.ListJobsRequest(page_size=1000, page_token=token)
                try:
                    reply = await stub.ListJobs(request)
                except grpc.aio.AioRpcError as err:
                    failures.append(f"{err.code().name}: {(err.details() or '')[:80]}")
                    break
                sizes.append(reply.ByteSize())
                seen += len(reply.jobs)
                token = reply.next_page_token
                if not token:
                    break
    return seen


async def main(args: argparse.Namespace) -> None:
    db = args.db or f"sqlite:///{Path(tempfile.mkdtemp()) / 'list_memory.db'}"
    log = Path(tempfile.mkdtemp()) / "server.log"
    argv = [str(BIN / "jobwheel-server"), "--listen", "127.0.0.1:0", "--db", db]
    with Subprocess(argv, log) as server:
        body = payload(args.shape, args.payload_bytes)
        async with grpc.aio.insecure_channel(server.address, options=UNLIMITED) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            for _ in range(args.jobs):
                await stub.EnqueueJob(pb.EnqueueJobRequest(task="bench.nobody", payload=body))
        await asyncio.sleep(1.0)
        before = rss_mib(server.pid)
        stop = asyncio.Event()
        rss: list[float] = []
        health: list[float] = []
        sizes: list[int] = []
        failed: list[str] = []
        background = [
            asyncio.create_task(sample_rss(server.pid, rss, stop)),
            asyncio.create_task(check_health(server.address, health, stop)),
        ]
        t0 = time.perf_counter()
        seen = await asyncio.gather(
            *(list_all(server.address, args.rounds, sizes, failed) for _ in range(args.listers))
        )
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*background)
        await asyncio.sleep(2.0)
        after = rss_mib(server.pid)
    print(
        f"{args.jobs} jobs x {body.ByteSize():,} B payload ({args.shape}), "
        f"{args.listers} concurrent listers x {args.rounds} rounds, page_size 1000"
    )
    print(
        f"listing: {elapsed:.1f} s, {sum(seen):,} jobs in {len(sizes)} replies, "
        f"largest reply {max(sizes, default=0) / 2**20:.2f} MiB, {len(failed)} failed calls"
        + (f" ({failed[0]})" if failed else "")
    )
    print(
        f"server RSS: before {before:.0f} MiB, peak {max(rss, default=before):.0f} MiB, "
        f"after {after:.0f} MiB (2 s later)"
    )
    if health:
        print(
            f"health check during the listing ({len(health)} calls): "
            f"median {statistics.median(health):.1f} ms, max {max(health):.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--payload-bytes", type=int, default=1_000_000)
    parser.add_argument("--shape", choices=("records", "string"), default="records")
    parser.add_argument("--listers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", default="")
    asyncio.run(main(parser.parse_args()))
