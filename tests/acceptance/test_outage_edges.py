"""How the server survives database outages (PostgreSQL through a cut proxy; SQLite
locked by another process, or on a full disk). In-process servers on the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.acceptance.tcp_proxy import TcpProxy
from tests.acceptance.test_outage import NOT_SERVING, SERVING, health_of, wait_health
from tests.conftest import running_server


def dur(s: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(s * 1e9))
    return d


async def code_of(call, _deadline: float) -> tuple[str, float]:
    """The call's status code name and how long it took (`_deadline`: the one it was given)."""
    start = time.monotonic()
    try:
        result = await call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        return "OK", time.monotonic() - start
    except grpc.aio.AioRpcError as err:
        return err.code().name, time.monotonic() - start


async def stream_code(stream) -> str:
    try:
        async for _ in stream:
            pass
        return "OK"
    except grpc.aio.AioRpcError as err:
        return err.code().name


async def all_jobs(stub, **filt) -> list[job_pb2.Job]:
    out, token = [], ""
    while True:
        r = await stub.ListJobs(
            pb.ListJobsRequest(page_size=1000, page_token=token, filter=job_pb2.JobFilter(**filt))
        )
        out += r.jobs
        if not r.next_page_token:
            return out
        token = r.next_page_token


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
async def test_pg_cut_worker_and_batch_rpcs_unavailable_then_lease_survives(
    proxied_url: tuple[str, TcpProxy],
) -> None:
    """During a cut, the RPCs test_outage does not try (BatchEnqueueJobs, GetJobStats,
    WatchJobs live, LeaseJobs, HeartbeatJob(s), CompleteJob, FailJob) answer UNAVAILABLE
    within their deadline; a lease longer than the cut is still honoured afterwards."""
    url, proxy = proxied_url
    async with running_server(url, recover_interval=1.0) as s:
        job = (await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.outage"))).job
        lease = (
            await s.workers.LeaseJobs(
                wpb.LeaseJobsRequest(
                    worker_id="w1", tasks=["remote.outage"], max_jobs=1, lease_duration=dur(60)
                )
            )
        ).leases[0]
        await proxy.cut()
        T = 6
        calls = {
            "BatchEnqueueJobs": s.jobs.BatchEnqueueJobs(
                pb.BatchEnqueueJobsRequest(jobs=[pb.EnqueueJobRequest(task="test.noop")] * 3),
                timeout=T,
            ),
            "GetJobStats": s.jobs.GetJobStats(pb.GetJobStatsRequest(), timeout=T),
            "LeaseJobs": s.workers.LeaseJobs(
                wpb.LeaseJobsRequest(worker_id="w2", max_jobs=5, wait=dur(1)), timeout=T
            ),
            "HeartbeatJob": s.workers.HeartbeatJob(
                wpb.HeartbeatJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1"),
                timeout=T,
            ),
            "HeartbeatJobs": s.workers.HeartbeatJobs(
                wpb.HeartbeatJobsRequest(
                    worker_id="w1",
                    heartbeats=[wpb.JobHeartbeat(job_id=job.id, epoch=lease.epoch)],
                ),
                timeout=T,
            ),
            "FailJob": s.workers.FailJob(
                wpb.FailJobRequest(job_id="nope", epoch=1, worker_id="w1", error="x"), timeout=T
            ),
        }
        codes = {}
        for name, call in calls.items():
            codes[name] = await code_of(call, T)
        watch = s.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=1), timeout=T)
        codes["WatchJobs(since)"] = (await stream_code(watch), 0)
        complete = s.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1"), timeout=T
        )
        codes["CompleteJob"] = await code_of(complete, T)
        bad = {k: v for k, v in codes.items() if v[0] != "UNAVAILABLE" or v[1] > T - 0.5}
        await proxy.restore()
        await wait_health(s.channel, SERVING, within=15)
        # the lease (60 s) outlived the cut: the worker's report is accepted once
        done = await s.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1"), timeout=10
        )
        assert done.job.state == job_pb2.JOB_STATE_COMPLETED
        hist = await s.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
        assert [a.outcome for a in hist.attempts] == [job_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
        assert not bad, codes


@pytest.mark.postgres
async def test_pg_frozen_network_rpcs_end_by_deadline_and_health_follows(
    proxied_url: tuple[str, TcpProxy],
) -> None:
    """A network that drops packets (connections stay open, silent): calls end by their
    deadline (never hang), health goes NOT_SERVING via the probe's timeout, and SERVING after."""
    url, proxy = proxied_url
    async with running_server(url) as s:
        job = (await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.outage"))).job
        proxy.freeze()
        try:
            code, took = await code_of(s.jobs.GetJob(pb.GetJobRequest(id=job.id), timeout=2), 2)
            assert code in ("DEADLINE_EXCEEDED", "UNAVAILABLE") and took < 3, (code, took)
            await wait_health(s.channel, NOT_SERVING, within=8)
        finally:
            proxy.thaw()
        await wait_health(s.channel, SERVING, within=10)
        got = await s.jobs.GetJob(pb.GetJobRequest(id=job.id), timeout=5)
        assert got.job.id == job.id


@pytest.mark.postgres
async def test_pg_cut_during_large_batch_is_all_or_nothing_and_retry_dedupes(
    proxied_url: tuple[str, TcpProxy],
) -> None:
    url, proxy = proxied_url
    N = 3000
    async with running_server(url) as s:
        outcomes = []
        for delay in (0.02, 0.08, 0.2):
            tag = uuid.uuid4().hex[:8]
            reqs = [
                pb.EnqueueJobRequest(
                    task="remote.outage", idempotency_key=f"{tag}-{i}", labels={"b": tag}
                )
                for i in range(N)
            ]
            call = s.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs), timeout=20)
            task = asyncio.ensure_future(code_of(call, 20))
            await asyncio.sleep(delay)
            await proxy.cut()
            code, _ = await task
            await asyncio.sleep(0.5)
            await proxy.restore()
            await wait_health(s.channel, SERVING, within=15)
            stored = len(await all_jobs(s.jobs, labels={"b": tag}))
            outcomes.append((delay, code, stored))
            assert stored in (0, N), outcomes
            if code == "OK":
                assert stored == N
            again = await s.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs), timeout=20)
            assert len({r.job.id for r in again.results}) == N
            assert all(r.already_exists for r in again.results) == (stored == N)
            assert len(await all_jobs(s.jobs, labels={"b": tag})) == N
        print(outcomes)


@pytest.mark.postgres
async def test_pg_watchers_see_events_after_restore_and_resume_gap_free(
    proxied_url: tuple[str, TcpProxy],
) -> None:
    """A live watcher (and a new one) must get the changes committed after the restore, and a
    watcher resuming with since_revision gets every revision, consecutive."""
    url, proxy = proxied_url
    async with running_server(url) as s:
        seen: list[int] = []
        ended: list[str] = []

        async def watch(since: int) -> None:
            stream = s.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=since))
            try:
                async for msg in stream:
                    if msg.HasField("event"):
                        seen.append(msg.event.revision)
            except grpc.aio.AioRpcError as err:
                ended.append(err.code().name)

        first = (await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.outage"))).job
        watcher = asyncio.ensure_future(watch(0))
        await asyncio.sleep(0.3)
        await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.outage"))
        await proxy.cut()
        await asyncio.sleep(2)
        await proxy.restore()
        await wait_health(s.channel, SERVING, within=15)
        if watcher.done():  # ended by the outage: resume from the last revision
            assert ended and ended[0] == "UNAVAILABLE", ended
            watcher = asyncio.ensure_future(watch(seen[-1] if seen else 1))
        ids = [
            (await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.outage"))).job.id
            for _ in range(3)
        ]
        deadline = time.monotonic() + 6
        while len(seen) < 4 and time.monotonic() < deadline:  # noqa: ASYNC110 - a list fills
            await asyncio.sleep(0.1)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        assert len(seen) >= 4, (seen, ended, ids, first.id)
        assert seen == list(range(seen[0], seen[0] + len(seen))), seen


@pytest.mark.postgres
async def test_pg_recurring_job_fires_after_a_cut(proxied_url: tuple[str, TcpProxy]) -> None:
    url, proxy = proxied_url
    async with running_server(url, recover_interval=1.0) as s:
        job = (
            await s.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="test.noop",
                    schedule=job_pb2.Schedule(
                        interval=dur(1), misfire_policy=job_pb2.MISFIRE_POLICY_RUN_ONCE
                    ),
                )
            )
        ).job
        await asyncio.sleep(2.5)
        before = (await s.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.execution_count
        assert before >= 1
        await proxy.cut()
        await asyncio.sleep(3)
        await proxy.restore()
        await wait_health(s.channel, SERVING, within=15)
        await asyncio.sleep(3)
        after = (await s.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
        assert after.execution_count >= before + 2, (before, after)
        hist = await s.jobs.ListJobAttempts(
            pb.ListJobAttemptsRequest(job_id=job.id, page_size=1000)
        )
        running = [a for a in hist.attempts if a.outcome == job_pb2.ATTEMPT_OUTCOME_UNSPECIFIED]
        assert len(running) <= 1, hist


@pytest.mark.postgres
async def test_pg_cut_longer_than_lease(proxied_url: tuple[str, TcpProxy]) -> None:
    """A cut outlasting a remote lease: afterwards the worker's report is either accepted
    (job COMPLETED, one attempt) or refused as stale with the job re-run and its lost
    attempt on record; never both, never a job stuck RUNNING with no lease."""
    url, proxy = proxied_url
    async with running_server(url, recover_interval=0.5) as s:
        job = (
            await s.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="remote.outage", retry_policy=job_pb2.RetryPolicy(max_attempts=3)
                )
            )
        ).job
        lease = (
            await s.workers.LeaseJobs(
                wpb.LeaseJobsRequest(
                    worker_id="w1", tasks=["remote.outage"], max_jobs=1, lease_duration=dur(1.5)
                )
            )
        ).leases[0]
        await proxy.cut()
        await asyncio.sleep(3)
        await proxy.restore()
        await wait_health(s.channel, SERVING, within=15)
        await asyncio.sleep(2)  # recovery runs
        code, _ = await code_of(
            s.workers.CompleteJob(
                wpb.CompleteJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1"),
                timeout=5,
            ),
            5,
        )
        got = (await s.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
        hist = await s.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job.id))
        outcomes = [job_pb2.AttemptOutcome.Name(a.outcome) for a in hist.attempts]
        print(code, job_pb2.JobState.Name(got.state), outcomes)
        assert code == "FAILED_PRECONDITION", (code, got.state, outcomes)
        assert outcomes[0] in ("ATTEMPT_OUTCOME_LOST", "ATTEMPT_OUTCOME_TIMED_OUT"), outcomes
        assert got.state in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RETRYING), got


# ---------------------------------------------------------------------------- SQLite


async def test_sqlite_other_process_holds_exclusive_lock(tmp_path: Path) -> None:
    """Another process holds BEGIN EXCLUSIVE for 3 s: calls answer OK (after waiting) or
    UNAVAILABLE, never INTERNAL/UNKNOWN; jobs that end meanwhile are stored; all recovers."""
    db = tmp_path / "j.db"
    async with running_server(f"sqlite:///{db}") as s:
        gate = uuid.uuid4().hex
        ids = [
            (
                await s.jobs.EnqueueJob(
                    pb.EnqueueJobRequest(task="test.gate", payload=_struct({"gate": gate}))
                )
            ).job.id
            for _ in range(5)
        ]
        await _wait_state(s, ids, job_pb2.JOB_STATE_RUNNING)
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            c = sqlite3.connect(db, timeout=10, isolation_level=None)
            c.execute("BEGIN EXCLUSIVE")
            held.set()
            release.wait(3)
            c.execute("COMMIT")
            c.close()

        t = threading.Thread(target=hold)
        t.start()
        await asyncio.to_thread(held.wait, 5)
        from tests.handlers import open_gate

        open_gate(gate)
        codes = []
        for call in (
            s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.noop"), timeout=8),
            s.jobs.GetJob(pb.GetJobRequest(id=ids[0]), timeout=8),
            s.jobs.ListJobs(pb.ListJobsRequest(page_size=5), timeout=8),
        ):
            codes.append(await code_of(call, 8))
        await asyncio.to_thread(t.join, 10)
        assert {c for c, _ in codes} <= {"OK", "UNAVAILABLE"}, codes
        await _wait_state(s, ids, job_pb2.JOB_STATE_COMPLETED, within=15)
        for i in ids:
            hist = await s.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=i))
            assert [a.outcome for a in hist.attempts] == [job_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
        assert await health_of(s.channel) == {SERVING}
        await s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.noop"), timeout=5)


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


async def test_sqlite_disk_full_unavailable_then_recovers(tiny_fs: Path) -> None:
    """In-process attempts that end while the disk is full are stored once space is back
    (they were given up: RUNNING until their leases expired, then run a second time), while
    the API answers UNAVAILABLE and reads go on."""
    db = tiny_fs / "j.db"
    async with running_server(f"sqlite:///{db}") as s:
        gate = uuid.uuid4().hex
        ids = [
            (
                await s.jobs.EnqueueJob(
                    pb.EnqueueJobRequest(task="test.gate", payload=_struct({"gate": gate}))
                )
            ).job.id
            for _ in range(5)
        ]
        await _wait_state(s, ids, job_pb2.JOB_STATE_RUNNING)
        filler = tiny_fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        from tests.handlers import open_gate

        open_gate(gate)
        big = pb.BatchEnqueueJobsRequest(
            jobs=[
                pb.EnqueueJobRequest(task="remote.outage", payload=_struct({"x": "y" * 2000}))
                for _ in range(500)
            ]
        )
        codes = [await code_of(s.jobs.BatchEnqueueJobs(big, timeout=8), 8)]
        codes.append(await code_of(s.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t"), timeout=8), 8))
        codes.append(await code_of(s.jobs.GetJob(pb.GetJobRequest(id=ids[0]), timeout=8), 8))
        await asyncio.sleep(1)
        filler.unlink()
        assert codes[0][0] == "UNAVAILABLE" and codes[1][0] in ("OK", "UNAVAILABLE"), codes
        assert codes[2][0] == "OK", codes
        await _wait_state(s, ids, job_pb2.JOB_STATE_COMPLETED, within=8)
        for i in ids:
            hist = await s.jobs.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=i))
            assert [a.outcome for a in hist.attempts] == [job_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
        await s.jobs.BatchEnqueueJobs(big, timeout=8)
        assert await health_of(s.channel) == {SERVING}


def _struct(d: dict):
    from google.protobuf import struct_pb2

    st = struct_pb2.Struct()
    st.update(d)
    return st


async def _wait_state(s, ids: list[str], state: int, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while True:
        states = [(await s.jobs.GetJob(pb.GetJobRequest(id=i))).job.state for i in ids]
        if all(x == state for x in states):
            return
        assert time.monotonic() < deadline, [job_pb2.JobState.Name(x) for x in states]
        await asyncio.sleep(0.1)
