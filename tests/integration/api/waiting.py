"""Waiting for a job to reach a state (tests poll GetJob: the server is real), and for a
WatchJobs stream's messages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running

TERMINAL = (job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED)


async def wait_for_state(
    stub: job_service_pb2_grpc.JobServiceStub,
    job_id: str,
    states: tuple[int, ...] = TERMINAL,
    within: float = 15.0,
) -> job_pb2.Job:
    deadline = time.monotonic() + within
    while True:
        job = (await stub.GetJob(pb.GetJobRequest(id=job_id))).job
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job_pb2.JobState.Name(job.state)}")
        await asyncio.sleep(0.02)


async def until(
    server: Running, check: Callable[[], Awaitable[bool]], within: float = 15.0
) -> None:
    """Returns once `check()` holds, looking again after each dispatch cycle of the server
    (a job starting, or coming due) or stored attempt end, or every half second at the
    latest."""
    assert server.app.engine is not None
    dispatcher = server.app.engine.dispatcher
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not so after {within} s")
        waits = [asyncio.ensure_future(s.next()) for s in (dispatcher.cycles, dispatcher.settled)]
        try:
            await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


async def until_watching(server: Running, count: int, within: float = 10.0) -> None:
    """Returns once `count` WatchJobs streams in all have subscribed to the event bus (the
    events from then on reach them)."""
    assert server.app.watcher is not None
    await asyncio.wait_for(server.app.watcher.subscribed.reach(count), within)


async def eventually(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Returns once `check()` holds, looking every 50 ms (for what no signal tells)."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def take(
    stream: AsyncIterator[pb.WatchJobsResponse], n: int, within: float = 10
) -> list[pb.WatchJobsResponse]:
    """The next `n` messages of `stream` but heartbeats, within `within` seconds."""
    out: list[pb.WatchJobsResponse] = []

    async def read() -> None:
        async for msg in stream:
            if msg.HasField("heartbeat"):
                continue
            out.append(msg)
            if len(out) == n:
                return

    await asyncio.wait_for(read(), within)
    return out


async def until_job(
    server: Running, job_id: str, pred: Callable[[job_pb2.Job], bool], within: float = 10.0
) -> job_pb2.Job:
    """The job once `pred` holds of it (read again after each engine cycle)."""
    got = job_pb2.Job()

    async def check() -> bool:
        nonlocal got
        got = (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job
        return bool(pred(got))

    await until(server, check, within)
    return got
