"""The Python worker SDK's lifecycle at its edges, against a real server (SQLite):
results the server refuses, handlers that raise BaseException, sync handlers under the
defaults, a stop with a stuck sync handler, a server restart while leases are held."""

from __future__ import annotations

import asyncio
import math
import signal
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jobwheel.client.worker import JobContext, Worker
from jobwheel.server.app import App
from jobwheel.server.config import Settings
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb

from tests.conftest import Running, running_server
from tests.integration.api.waiting import TERMINAL, wait_for_state
from tests.integration.workers.helpers import enqueue, get
from tests.integration.workers.test_sdk import running

RUNNING = job_pb2.JOB_STATE_RUNNING


@pytest.fixture
async def sq(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_server(f"sqlite:///{tmp_path / 'jw.db'}", recover_interval=0.2) as r:
        yield r


def worker_for(server: Running, **kw: Any) -> Worker:
    kw.setdefault("worker_id", "edge-1")
    kw.setdefault("poll_wait", 2.0)
    return Worker(server.address, **kw)


async def not_running_within(server: Running, job_id: str, within: float) -> job_pb2.Job:
    deadline = time.monotonic() + within
    while True:
        job = await get(server, job_id)
        if job.state != RUNNING or time.monotonic() > deadline:
            return job
        await asyncio.sleep(0.05)


def _deep(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


# -- results the server refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        pytest.param({"x": math.nan}, id="nan"),
        pytest.param({"x": _deep(30)}, id="too-deep"),
        pytest.param({"x": "y" * (1 << 20) + "zz"}, id="too-large"),
    ],
)
async def test_a_result_the_server_refuses_ends_the_job(sq: Running, result: Any) -> None:
    """A completion the server refuses per item (INVALID_ARGUMENT) fails the attempt for good
    at once (the job sat RUNNING, unheartbeated, until its lease expired, then re-ran)."""
    job = await enqueue(sq, "rv.badresult")
    worker = worker_for(sq, lease_duration=30.0)
    returned = asyncio.Event()

    @worker.task("rv.badresult")
    async def bad(payload: dict[str, Any]) -> Any:
        returned.set()
        return result

    async with running(worker):
        await asyncio.wait_for(returned.wait(), 10)
        got = await not_running_within(sq, job.id, 4.0)
    assert got.state != RUNNING, "a refused result left the job RUNNING until lease expiry"
    assert got.last_error, "the job carries no error saying its result was refused"


async def test_results_that_fit_alone_but_not_in_one_batch(sq: Running) -> None:
    """Results that fit one by one (0.9 MiB each) go in report calls under the server's 4 MiB
    message limit (five in one call were refused whole, and every job re-ran)."""
    n = 5
    jobs = [await enqueue(sq, "rv.big") for _ in range(n)]
    # the lease bounds the report's retries (give_up), and so this test's stop
    worker = worker_for(sq, concurrency=n, lease_duration=2.0, report_delay=0.3)
    started = 0
    all_in = asyncio.Event()

    @worker.task("rv.big")
    async def big(payload: dict[str, Any]) -> Any:
        nonlocal started
        started += 1
        if started == n:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 10)
        return {"blob": "b" * 900_000}

    async with running(worker):
        await asyncio.wait_for(all_in.wait(), 10)
        states = [(await not_running_within(sq, j.id, 1.5)).state for j in jobs]
    assert states == [job_pb2.JOB_STATE_COMPLETED] * n, [job_pb2.JobState.Name(s) for s in states]


# -- handlers raising BaseException ---------------------------------------------------------


class Abort(BaseException):
    """A BaseException that is neither KeyboardInterrupt, SystemExit nor CancelledError."""


async def test_a_base_exception_from_a_handler_is_reported(sq: Running) -> None:
    """A BaseException subclass from a handler fails the attempt at once, "Abort: ..." (the
    job sat RUNNING until its lease expired)."""
    job = await enqueue(sq, "rv.abort")
    worker = worker_for(sq, lease_duration=30.0)
    raised = asyncio.Event()

    @worker.task("rv.abort")
    async def abort(payload: dict[str, Any]) -> None:
        raised.set()
        raise Abort("handler gave up")

    async with running(worker):
        await asyncio.wait_for(raised.wait(), 10)
        got = await not_running_within(sq, job.id, 4.0)
    assert got.state != RUNNING, "BaseException left the job RUNNING until its lease expired"
    assert "Abort" in got.last_error


# -- sync handlers under the defaults -------------------------------------------------------


async def test_sync_handlers_run_up_to_concurrency_at_once(sq: Running) -> None:
    """`concurrency` plain functions run at once (the loop's default executor has
    min(32, cpus + 4) threads: 6 on 2 cores, under the default concurrency of 10)."""
    n = 10
    barrier = threading.Barrier(n, timeout=4.0)
    jobs = [await enqueue(sq, "rv.sync") for _ in range(n)]
    worker = worker_for(sq, prefetch=0)  # concurrency=10, the default
    assert worker.concurrency == n

    @worker.task("rv.sync")
    def sync(payload: dict[str, Any]) -> str:
        barrier.wait()  # all ten must run at once
        return "ok"

    async with running(worker):
        ended = (job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_RETRYING)
        done = [await wait_for_state(sq.jobs, j.id, ended, within=10) for j in jobs]
    bad = [d.last_error for d in done if d.state != job_pb2.JOB_STATE_COMPLETED]
    assert not bad, f"{len(bad)} of {n} sync handlers could not run at once: {bad[:1]}"


async def test_a_cancelled_sync_handler_still_holds_its_slot(sq: Running) -> None:
    """A cancelled job whose plain function ignores ctx.cancelled keeps its slot until the
    thread returns: with concurrency=1, no second handler runs beside it."""
    worker = worker_for(sq, concurrency=1, prefetch=0, lease_duration=0.9)
    lock = threading.Lock()
    now = [0]
    most = [0]
    first_in = threading.Event()

    @worker.task("rv.stubborn")
    def stubborn(payload: dict[str, Any], ctx: JobContext) -> str:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        first_in.set()
        try:
            time.sleep(payload["sleep"])  # ignores ctx.cancelled
        finally:
            with lock:
                now[0] -= 1
        return "ok"

    async with running(worker):
        a = await enqueue(sq, "rv.stubborn", payload={"sleep": 3.0})
        await asyncio.to_thread(first_in.wait, 10)
        await sq.jobs.CancelJob(jpb.CancelJobRequest(id=a.id, reason="no longer needed"))
        b = await enqueue(sq, "rv.stubborn", payload={"sleep": 0.1})
        await wait_for_state(sq.jobs, b.id, within=10)
    assert most[0] == 1, f"{most[0]} handlers ran at once with concurrency=1"


async def test_a_cancelled_async_handler_slow_to_stop_holds_its_slot(sq: Running) -> None:
    """An async handler that takes a while to honour the cancel keeps its slot until it
    returns (concurrency=1: the next job waits), its late result is not reported, and the job
    stays CANCELLED."""
    worker = worker_for(sq, concurrency=1, prefetch=0, lease_duration=0.9)
    now = most = 0
    began = asyncio.Event()

    @worker.task("rv.slowcancel")
    async def slowcancel(payload: dict[str, Any]) -> str:
        nonlocal now, most
        now += 1
        most = max(most, now)
        began.set()
        try:
            await asyncio.sleep(payload["sleep"])
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)  # slow cleanup, then returns a result anyway
            return "late"
        finally:
            now -= 1
        return "ok"

    async with running(worker):
        a = await enqueue(sq, "rv.slowcancel", payload={"sleep": 30})
        await asyncio.wait_for(began.wait(), 10)
        await sq.jobs.CancelJob(jpb.CancelJobRequest(id=a.id, reason="stop"))
        b = await enqueue(sq, "rv.slowcancel", payload={"sleep": 0.05})
        done_b = await wait_for_state(sq.jobs, b.id, within=10)
    got = await get(sq, a.id)
    assert most == 1
    assert done_b.state == job_pb2.JOB_STATE_COMPLETED
    assert got.state == job_pb2.JOB_STATE_CANCELLED and got.cancel_reason == "stop"


# -- stopping a worker process --------------------------------------------------------------

_STUCK_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from jobwheel.client.worker import Worker
    address, marker, grace = sys.argv[1], sys.argv[2], float(sys.argv[3])
    w = Worker(address, worker_id="stuck", grace=grace, poll_wait=2.0, lease_duration=30.0)

    @w.task("rv.stuck")
    def stuck(payload):
        Path(marker).write_text("in")
        while True:              # a sync handler that never returns
            time.sleep(0.05)

    w.run_forever()
    """
)


async def test_sigterm_ends_a_worker_whose_sync_handler_never_returns(
    sq: Running, tmp_path: Path
) -> None:
    """After SIGTERM and the grace, the job is released and the process exits although a
    handler thread never returns (a deploy hung on it)."""
    marker = tmp_path / "stuck.started"
    job = await enqueue(sq, "rv.stuck")
    proc = await _stuck_worker(sq, marker, grace=1.0)
    try:
        proc.send_signal(signal.SIGTERM)
        released = await wait_for_state(sq.jobs, job.id, (job_pb2.JOB_STATE_QUEUED,), within=5)
        assert released.state == job_pb2.JOB_STATE_QUEUED  # given back after the 1 s grace
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_second_sigterm_ends_the_worker_at_once(sq: Running, tmp_path: Path) -> None:
    marker = tmp_path / "stuck.started"
    job = await enqueue(sq, "rv.stuck")
    proc = await _stuck_worker(sq, marker, grace=60.0)
    try:
        proc.send_signal(signal.SIGTERM)  # a minute's grace begins
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 1
        # not given back: it runs again when its lease expires
        assert (await get(sq, job.id)).state == RUNNING
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _stuck_worker(sq: Running, marker: Path, *, grace: float) -> asyncio.subprocess.Process:
    """A worker process whose handler of rv.stuck has begun (and never returns)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STUCK_WORKER, sq.address, str(marker), str(grace),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    for _ in range(200):
        if await asyncio.to_thread(marker.exists):
            return proc
        await asyncio.sleep(0.05)
    proc.kill()
    await proc.wait()
    raise AssertionError("the worker never started the job")


# -- the server restarting ------------------------------------------------------------------


async def test_server_restart_while_leases_are_held(tmp_path: Path) -> None:
    """The server stops and a new one starts on the same SQLite file and port while the
    worker runs two handlers: the worker reconnects, their completions land (or, if refused,
    the jobs run again), no job runs twice at once, and jobs enqueued afterwards are leased."""
    import tests.handlers  # noqa: F401

    db = f"sqlite:///{tmp_path / 'jw.db'}"
    app = App(Settings(listen="127.0.0.1:0", db=db, grace_period=0.5, recover_interval=0.2))
    port = await app.start()
    address = f"127.0.0.1:{port}"
    worker = Worker(address, worker_id="restart", poll_wait=1.0, lease_duration=6.0)
    in_flight: dict[str, int] = {}
    overlaps: list[str] = []
    runs: list[str] = []
    both = asyncio.Event()

    @worker.task("rv.restart")
    async def work(payload: dict[str, Any], ctx: JobContext) -> int:
        runs.append(ctx.job_id)
        in_flight[ctx.job_id] = in_flight.get(ctx.job_id, 0) + 1
        if in_flight[ctx.job_id] > 1:
            overlaps.append(ctx.job_id)
        if len(in_flight) >= 2:
            both.set()
        try:
            await asyncio.sleep(payload["sleep"])
        finally:
            in_flight[ctx.job_id] -= 1
        return ctx.attempt

    import grpc
    from jobwheel.v1 import job_service_pb2_grpc

    channel = grpc.aio.insecure_channel(address)
    jobs = job_service_pb2_grpc.JobServiceStub(channel)

    async def add(sleep: float) -> str:
        req = jpb.EnqueueJobRequest(task="rv.restart")
        req.payload.update({"sleep": sleep})
        return (await jobs.EnqueueJob(req, wait_for_ready=True, timeout=10)).job.id

    async def final(jid: str) -> job_pb2.Job:
        deadline = time.monotonic() + 20
        while True:
            got = (await jobs.GetJob(jpb.GetJobRequest(id=jid), wait_for_ready=True)).job
            if got.state in TERMINAL or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)

    run = asyncio.create_task(worker.run())
    app2: App | None = None
    try:
        # one finishes while the server is down (its report must wait), one after
        first = [await add(1.0), await add(3.0)]
        await asyncio.wait_for(both.wait(), 10)
        await app.stop(0.2)
        await asyncio.sleep(1.5)
        app2 = App(Settings(listen=address, db=db, grace_period=0.5, recover_interval=0.2))
        await app2.start()
        later = await add(0.1)
        states = {}
        for jid in [*first, later]:
            got = await final(jid)
            states[jid] = job_pb2.JobState.Name(got.state)
        await worker.stop(1.0)
        await run
    finally:
        if not run.done():
            run.cancel()
        await channel.close()
        if app2 is not None:
            await app2.stop(0.2)
    assert set(states.values()) == {"JOB_STATE_COMPLETED"}, states
    assert not overlaps, f"ran twice at once: {overlaps}"
    assert later in runs
    assert [runs.count(j) for j in first] == [1, 1], f"runs: {runs}"


_EXITING_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from jobwheel.client.worker import Worker
    address, marker = sys.argv[1], sys.argv[2]
    w = Worker(address, worker_id="exiting", grace=1.0, poll_wait=2.0, lease_duration=30.0)

    @w.task("rv.long")
    async def long(payload):
        Path(marker).write_text("in")
        await asyncio.sleep(30)

    @w.task("rv.exit")
    def exits(payload):
        sys.exit(3)              # a sync handler's SystemExit (in a thread)

    w.run_forever()
    """
)


async def test_system_exit_in_a_sync_handler(sq: Running, tmp_path: Path) -> None:
    """SystemExit from a plain function fails its attempt ("SystemExit: 3") and the worker
    goes on (it ended the whole worker, and the job re-ran and ended the next)."""
    marker = tmp_path / "long.started"
    long = await enqueue(sq, "rv.long")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _EXITING_WORKER, sq.address, str(marker),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(200):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the worker never started the long job"
        exiting = await enqueue(sq, "rv.exit")
        await asyncio.sleep(1.0)
        alive = proc.returncode is None
        got = await not_running_within(sq, exiting.id, 3.0)
        other = await get(sq, long.id)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert got.state != RUNNING, (
        f"SystemExit left its job RUNNING (worker alive: {alive}; the long job "
        f"{job_pb2.JobState.Name(other.state)})"
    )
    assert alive, "a handler's SystemExit killed the worker process"
