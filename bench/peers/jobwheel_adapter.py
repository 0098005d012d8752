"""jobwheel on SQLite and on PostgreSQL (in-process handlers, a remote worker with the SDK's
defaults, and W1 through the Python clients, asyncio and blocking, as well as one EnqueueJob
per job), and the bare grpc.aio echo of EnqueueJob: the servers run as subprocesses
(bench.procs), this process is the client. Runs in the project's venv."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.options import Options
from bench.peers.spec import Adapter, Env, Hook, Result, Sizes
from bench.procs import Subprocess


def _options(env: Env, postgres: bool) -> Options:
    return Options(workdir=Path(env.workdir), db_url=env.postgres_url if postgres else None)


def _server(env: Env, postgres: bool, handlers: bool) -> Subprocess:
    from bench import procs

    work = Path(env.workdir)
    url = env.postgres_url if postgres else None
    return procs.jobwheel_server(
        work / "jobwheel.db", work / "jobwheel.log", handlers=handlers, url=url
    )


async def _singles(address: str, sizes: Sizes) -> float:
    from bench import jobs
    from bench.peers.load import async_count

    async with jobs.channel(address) as ch:
        stub = jobs.stub(ch)
        reqs = [jobs.request(jobs.UNHANDLED, i) for i in range(sizes.enqueues)]
        await stub.EnqueueJob(reqs[0])  # connected
        return await async_count(lambda i: stub.EnqueueJob(reqs[i]), sizes.enqueues, sizes.callers)


def w1(postgres: bool) -> Hook:
    def hook(sizes: Sizes, env: Env) -> Result:
        with _server(env, postgres, handlers=False) as srv:
            return {"rate": asyncio.run(_singles(srv.address, sizes))}

    return hook


async def _client_singles(address: str, sizes: Sizes) -> float:
    """W1 through the Python client's enqueue_job, which merges concurrent calls into
    BatchEnqueueJobs (jobwheel.client.coalescing); each call builds its request, as a user's
    does."""
    from jobwheel.client import AsyncClient

    from bench import jobs
    from bench.peers.load import async_count

    async with AsyncClient(address) as client:
        payloads = [{"to": "ada@example.com", "n": i} for i in range(sizes.enqueues)]
        await client.enqueue_job(jobs.UNHANDLED, payload=payloads[0])  # connected
        return await async_count(
            lambda i: client.enqueue_job(jobs.UNHANDLED, payload=payloads[i]),
            sizes.enqueues,
            sizes.callers,
        )


def w1_client(postgres: bool) -> Hook:
    def hook(sizes: Sizes, env: Env) -> Result:
        with _server(env, postgres, handlers=False) as srv:
            return {"rate": asyncio.run(_client_singles(srv.address, sizes))}

    return hook


def _blocking_singles(address: str, sizes: Sizes) -> float:
    """W1 through the blocking Client's enqueue_job from threads (as huey's and RQ's callers
    are), which merges concurrent calls into BatchEnqueueJobs
    (jobwheel.client.coalescing_threads)."""
    from jobwheel.client import Client

    from bench import jobs
    from bench.peers.load import thread_count

    with Client(address) as client:
        payloads = [{"to": "ada@example.com", "n": i} for i in range(sizes.enqueues)]
        client.enqueue_job(jobs.UNHANDLED, payload=payloads[0])  # connected
        return thread_count(
            lambda i: client.enqueue_job(jobs.UNHANDLED, payload=payloads[i]),
            sizes.enqueues,
            sizes.callers,
        )


def w1_blocking_client(postgres: bool) -> Hook:
    def hook(sizes: Sizes, env: Env) -> Result:
        with _server(env, postgres, handlers=False) as srv:
            return {"rate": _blocking_singles(srv.address, sizes)}

    return hook


def echo_w1(sizes: Sizes, env: Env) -> Result:
    from bench import procs

    with procs.echo_server(Path(env.workdir) / "echo.log") as srv:
        return {"rate": asyncio.run(_singles(srv.address, sizes))}


def w2(postgres: bool) -> Hook:
    async def batches(address: str, sizes: Sizes) -> float:
        from bench import jobs

        async with jobs.channel(address) as ch:
            stub = jobs.stub(ch)
            calls = sizes.batched // sizes.batch
            reqs = [jobs.batch(jobs.UNHANDLED, sizes.batch, k * sizes.batch) for k in range(calls)]
            started = time.perf_counter()
            for req in reqs:
                await stub.BatchEnqueueJobs(req)
            return calls * sizes.batch / (time.perf_counter() - started)

    def hook(sizes: Sizes, env: Env) -> Result:
        with _server(env, postgres, handlers=False) as srv:
            return {"rate": asyncio.run(batches(srv.address, sizes))}

    return hook


def w3(postgres: bool) -> Hook:
    def hook(sizes: Sizes, env: Env) -> Result:
        from bench import drain

        got = asyncio.run(drain.jobwheel_drain(_options(env, postgres), sizes.drained))
        return {"rate": got.per_second}

    return hook


def w3_remote(postgres: bool) -> Hook:
    """Loaded into a server without handlers; a Worker with the SDK's defaults drains them."""

    async def remote(address: str, sizes: Sizes) -> float:
        from jobwheel.client.worker import Worker

        from bench import jobs
        from bench.handlers import NOOP

        async with jobs.channel(address) as ch:
            stub = jobs.stub(ch)
            await jobs.enqueue_all(
                stub, (jobs.request(NOOP, i) for i in range(sizes.drained)), 1000
            )
            worker = Worker(address)

            @worker.task(NOOP)
            async def noop(payload: object) -> None:
                return None

            running = asyncio.create_task(worker.run())
            try:
                await jobs.wait_drained(stub, every=jobs.DRAIN_POLL, within=900)
            finally:
                await worker.stop(5)
                await running
            done = await jobs.list_all(stub)
        first, last = jobs.drained_span(done)
        return sizes.drained / (last - first)

    def hook(sizes: Sizes, env: Env) -> Result:
        with _server(env, postgres, handlers=False) as srv:
            return {"rate": asyncio.run(remote(srv.address, sizes))}

    return hook


def w4(postgres: bool) -> Hook:
    def hook(sizes: Sizes, env: Env) -> Result:
        from bench import lateness

        with _server(env, postgres, handlers=True) as srv:
            budget = sizes.lead - lateness.LEAD  # due lead s after the enqueue starts
            got = asyncio.run(lateness.measure(srv.address, "w4", sizes.fires, sizes.span, budget))
        return {
            "p50": got.p50 * 1000,
            "p99": got.p99 * 1000,
            "early": float(got.early),
            "fired": float(got.fires),
            "missed": float(sizes.fires - got.fires),
        }

    return hook


def _jobwheel(name: str, backend: str, postgres: bool) -> Adapter:
    hooks = {"w1": w1(postgres), "w2": w2(postgres), "w3": w3(postgres), "w4": w4(postgres)}
    return Adapter(name, backend, "project", hooks, "postgres" if postgres else "")


ADAPTERS = [
    _jobwheel("jobwheel/SQLite", "embedded", postgres=False),
    Adapter("jobwheel remote worker/SQLite", "embedded", "project", {"w3": w3_remote(False)}),
    Adapter("jobwheel Python client/SQLite", "embedded", "project", {"w1": w1_client(False)}),
    Adapter(
        "jobwheel blocking client/SQLite", "embedded", "project", {"w1": w1_blocking_client(False)}
    ),
    _jobwheel("jobwheel/PostgreSQL", "postgres", postgres=True),
    Adapter(
        "jobwheel remote worker/PostgreSQL",
        "postgres",
        "project",
        {"w3": w3_remote(True)},
        "postgres",
    ),
    Adapter(
        "jobwheel Python client/PostgreSQL",
        "postgres",
        "project",
        {"w1": w1_client(True)},
        "postgres",
    ),
    Adapter(
        "jobwheel blocking client/PostgreSQL",
        "postgres",
        "project",
        {"w1": w1_blocking_client(True)},
        "postgres",
    ),
    Adapter("grpc.aio echo", "baseline", "project", {"w1": echo_w1}),
]
