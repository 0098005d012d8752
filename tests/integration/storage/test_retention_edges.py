"""Retention pruning, event-log compaction, maintenance and schema migrations at their
edges."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from jobwheel.server.engine import PRUNE_BATCH
from jobwheel.server.maintenance import Duty
from jobwheel.server.model import EventSubscription, EventType
from jobwheel.server.storage import Store
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb
from sqlalchemy import text

from tests.conftest import Running, running_server
from tests.integration.api.waiting import wait_for_state
from tests.integration.storage.factories import T0, new_job

SECOND = 1_000_000
DAY = 86_400


def now_us() -> int:
    return time.time_ns() // 1000


def pruning(server: Running) -> Duty:
    assert server.app.engine is not None
    [duty] = [d for d in server.app.engine._duties() if d.name == "pruning"]
    return duty


def payload(**kw: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(kw)
    return s


async def enqueue(server: Running, **kw: Any) -> j.Job:
    return (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(**kw))).job


async def take(call: Any, n: int, within: float = 5.0) -> list[pb.WatchJobsResponse]:
    out: list[pb.WatchJobsResponse] = []

    async def read() -> None:
        async for msg in call:
            if msg.HasField("event"):
                out.append(msg)
                if len(out) == n:
                    return

    await asyncio.wait_for(read(), within)
    return out


# ---------------------------------------------------------------------------------------------
# retention vs the event log


async def test_idempotency_key_forever_outlives_retention(db_url: str) -> None:
    """`--idempotency-window 0`: "an idempotency key maps to its job forever", retention or
    not (pruning the job freed its key, and a repeat enqueue ran a second job)."""
    async with running_server(db_url, retention=60, idempotency_window=0) as server:
        req = pb.EnqueueJobRequest(task="test.noop", idempotency_key="pay-invoice-7")
        first = (await server.jobs.EnqueueJob(req)).job
        await wait_for_state(server.jobs, first.id)
        await pruning(server).run(now_us() + 120 * SECOND)
        again = await server.jobs.EnqueueJob(req)
        assert again.already_exists and again.job.id == first.id, (
            "a key held 'forever' was given to a second job after retention pruned the first"
        )


# ---------------------------------------------------------------------------------------------
# retention never touches unfinished jobs


async def test_retention_keeps_every_unfinished_job(db_url: str) -> None:
    """Pruned far in the future: only the terminal jobs go (with their attempts); running,
    scheduled, paused, retrying and recurring jobs (between occurrences, after a finished
    execution: end_time set) all stay."""
    async with running_server(db_url, retention=60) as server:
        done = await enqueue(server, task="test.echo")
        failed = await enqueue(server, task="test.boom", retry_policy=j.RetryPolicy(max_attempts=1))
        running = await enqueue(server, task="test.hang")
        retrying = await enqueue(
            server,
            task="test.boom",
            retry_policy=j.RetryPolicy(
                max_attempts=5,
                initial_backoff=duration_pb2.Duration(seconds=3600),
                max_backoff=duration_pb2.Duration(seconds=3600),
            ),
        )
        hour = j.Schedule(delay=duration_pb2.Duration(seconds=3600))
        later = await enqueue(server, task="test.noop", schedule=hour)
        paused = await enqueue(server, task="test.noop", schedule=hour)
        await server.jobs.PauseJob(pb.PauseJobRequest(id=paused.id))
        recurring = await enqueue(
            server,
            task="test.noop",
            schedule=j.Schedule(interval=duration_pb2.Duration(seconds=3600)),
        )
        await server.jobs.TriggerJob(pb.TriggerJobRequest(id=recurring.id))
        await wait_for_state(server.jobs, done.id)
        await wait_for_state(server.jobs, failed.id)
        await wait_for_state(server.jobs, running.id, (j.JOB_STATE_RUNNING,))
        await wait_for_state(server.jobs, retrying.id, (j.JOB_STATE_RETRYING,))

        async def ran_once() -> bool:
            got = (await server.jobs.GetJob(pb.GetJobRequest(id=recurring.id))).job
            return got.execution_count >= 1 and got.state == j.JOB_STATE_SCHEDULED

        deadline = time.monotonic() + 10
        while not await ran_once():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

        await pruning(server).run(now_us() + 10 * DAY * SECOND)
        store = server.app.store
        assert store is not None
        for gone in (done, failed):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await server.jobs.GetJob(pb.GetJobRequest(id=gone.id))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert await store.list_attempts(gone.id, limit=10) == []
        for kept, state in (
            (running, j.JOB_STATE_RUNNING),
            (retrying, j.JOB_STATE_RETRYING),
            (later, j.JOB_STATE_SCHEDULED),
            (paused, j.JOB_STATE_PAUSED),
            (recurring, j.JOB_STATE_SCHEDULED),
        ):
            got = (await server.jobs.GetJob(pb.GetJobRequest(id=kept.id))).job
            assert got.state == state, (kept.id, got.state)
        assert len(await store.list_attempts(recurring.id, limit=10)) >= 1
        assert len(await store.list_attempts(retrying.id, limit=10)) == 1


# ---------------------------------------------------------------------------------------------
# compaction of the event log holds the writer


async def _old_events(server: Running, n: int, at: int) -> None:
    """`n` events at time `at` appended to the log (the head moved past them), as a busy day
    leaves it: 1,000 events/s is 86 million a day."""
    store = server.app.store
    assert store is not None
    await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))
    async with store.write_engine.begin() as conn:
        snapshot = (
            await conn.execute(text("SELECT job FROM events ORDER BY revision DESC LIMIT 1"))
        ).scalar_one()
        head = (
            await conn.execute(text("SELECT revision FROM event_head WHERE id = 1"))
        ).scalar_one()
        # the log so far is as old as they are: compaction takes a head of the log
        await conn.execute(text("UPDATE events SET time = :at"), {"at": at})
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text(
                    "INSERT INTO events (revision, job_id, type, time, job) "
                    "SELECT :head + n, 'old-' || (n % 1000), 'completed', :at, :job "
                    "FROM generate_series(1, :n) AS n"
                ),
                {"head": head, "at": at, "job": snapshot, "n": n},
            )
        else:
            await conn.execute(
                text(
                    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :n) "
                    "INSERT INTO events (revision, job_id, type, time, job) "
                    "SELECT :head + n, 'old-' || (n % 1000), 'completed', :at, :job FROM s"
                ),
                {"head": head, "at": at, "job": snapshot, "n": n},
            )
        await conn.execute(text("UPDATE event_head SET revision = revision + :n"), {"n": n})


async def _enqueue_latencies(server: Running, busy: asyncio.Task[Any]) -> list[float]:
    loop = asyncio.get_running_loop()
    waits: list[float] = []
    while not busy.done():
        began = loop.time()
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))
        waits.append(loop.time() - began)
        await asyncio.sleep(0.002)
    await busy
    return waits


async def test_event_log_compaction_does_not_hold_enqueues(db_url: str) -> None:
    """The event log is compacted in batches, as finished jobs are pruned: one DELETE of a
    day's events (300,000) held every EnqueueJob for seconds on SQLite; 40,000 here."""
    # the server's own upkeep stays out of it (its first pass would prune beside this one)
    async with running_server(db_url, recover_interval=3600) as server:
        await _old_events(server, 40_000, now_us() - 2 * DAY * SECOND)
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))  # warm
        store = server.app.store
        assert store is not None
        # one transaction takes one batch: bounded whatever the backlog
        assert await store.prune_events(now_us() - DAY * SECOND, limit=2000) == 2000
        busy = asyncio.create_task(pruning(server).run(now_us()))
        waits = await _enqueue_latencies(server, busy)
        async with store.read_engine.connect() as conn:
            left = await conn.execute(
                text("SELECT count(*) FROM events WHERE time < :t"), {"t": now_us() - DAY * SECOND}
            )
        assert left.scalar_one() == 0  # it did compact
        assert len(waits) >= 3  # enqueues went on between the batches


async def _finished_jobs(server: Running, n: int, ended: int) -> None:
    """`n` COMPLETED jobs that ended at `ended`, copied from a real job's row."""
    store = server.app.store
    assert store is not None
    model = await enqueue(server, task="nobody")
    async with store.write_engine.begin() as conn:
        cols = [
            c
            for c in (await conn.execute(text("SELECT * FROM jobs LIMIT 0"))).keys()  # noqa: SIM118
            if c not in ("seq", "id", "state", "end_time", "next_run_time", "idempotency_key")
        ]
        listed = ", ".join(cols)
        series = (
            "generate_series(1, :n) AS s(n)"
            if conn.dialect.name == "postgresql"
            else "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :n) "
            "SELECT n FROM s) AS s"
        )
        await conn.execute(
            text(
                f"INSERT INTO jobs (id, state, end_time, next_run_time, {listed}) "
                f"SELECT 'done-' || s.n, 'completed', :ended, NULL, {listed} "
                f"FROM jobs, {series} WHERE jobs.id = :model"
            ),
            {"n": n, "ended": ended, "model": model.id},
        )


async def test_pruning_finished_jobs_is_batched_and_keeps_enqueues_going(
    db_url: str,
) -> None:
    """Retention of 10,000 finished jobs: all go, in batches, and an EnqueueJob meanwhile
    never waits for more than one batch."""
    async with running_server(db_url, retention=60) as server:
        await _finished_jobs(server, 10_000, now_us() - 2 * DAY * SECOND)
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))  # warm
        busy = asyncio.create_task(pruning(server).run(now_us()))
        waits = await _enqueue_latencies(server, busy)
        store = server.app.store
        assert store is not None
        async with store.read_engine.connect() as conn:
            left = await conn.execute(text("SELECT count(*) FROM jobs WHERE id LIKE 'done-%'"))
        assert left.scalar_one() == 0
        assert len(waits) >= 3, len(waits)  # enqueues went on between the batches


# ---------------------------------------------------------------------------------------------
# upgrades of a database holding jobs in every state, by starting the current server


async def _jobs_in_every_state(server: Running) -> dict[str, str]:
    """Job id -> what it is, with the server's own engine moving them."""
    hour = duration_pb2.Duration(seconds=3600)
    made: dict[str, str] = {}
    made[(await enqueue(server, task="test.echo", payload=payload(k="v"))).id] = "completed"
    failed = await enqueue(server, task="test.boom", retry_policy=j.RetryPolicy(max_attempts=1))
    made[failed.id] = "failed"
    retrying = await enqueue(
        server,
        task="test.boom",
        retry_policy=j.RetryPolicy(max_attempts=5, initial_backoff=hour, max_backoff=hour),
    )
    made[retrying.id] = "retrying"
    made[(await enqueue(server, task="test.noop", schedule=j.Schedule(delay=hour))).id] = (
        "scheduled"
    )
    paused = await enqueue(server, task="test.noop", schedule=j.Schedule(delay=hour))
    await server.jobs.PauseJob(pb.PauseJobRequest(id=paused.id))
    made[paused.id] = "paused"
    cancelled = await enqueue(server, task="test.noop", schedule=j.Schedule(delay=hour))
    await server.jobs.CancelJob(pb.CancelJobRequest(id=cancelled.id))
    made[cancelled.id] = "cancelled"
    made[(await enqueue(server, task="remote.thing", idempotency_key="once")).id] = "leased"
    made[(await enqueue(server, task="remote.other")).id] = "queued"
    recurring = await enqueue(
        server, task="test.noop", schedule=j.Schedule(interval=duration_pb2.Duration(seconds=1))
    )
    made[recurring.id] = "recurring"
    for job_id, what in made.items():
        if what in ("completed", "failed"):
            await wait_for_state(server.jobs, job_id)
        elif what == "retrying":
            await wait_for_state(server.jobs, job_id, (j.JOB_STATE_RETRYING,))
    return made


async def _until(check: Any, within: float = 8.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "still not so"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("version", [1, 4, 6, 7])
async def test_a_server_upgrades_a_database_holding_jobs_in_every_state(
    db_url: str, version: int
) -> None:
    from jobwheel.server.storage import open_store
    from jobwheel.v1 import worker_service_pb2 as wpb

    from tests.integration.storage.test_migrations import back_to, stamped

    async with running_server(db_url) as server:
        made = await _jobs_in_every_state(server)
        before = {
            job_id: (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job for job_id in made
        }
        lease = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(
                worker_id="w1",
                tasks=["remote.thing"],
                max_jobs=1,
                lease_duration=duration_pb2.Duration(seconds=600),
            )
        )
        [held] = lease.leases
    store = await open_store(db_url)
    await back_to(store, version)
    await store.close()

    async with running_server(db_url) as server:
        store = server.app.store
        assert store is not None
        from jobwheel.server.storage.migrations import latest_version

        assert await stamped(store) == [latest_version()]
        for job_id, what in made.items():
            got = (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job
            old = before[job_id]
            assert (got.task, got.payload, got.idempotency_key) == (
                old.task,
                old.payload,
                old.idempotency_key,
            ), what
            if what not in ("leased", "recurring"):
                assert got.state == old.state, (what, got.state, old.state)
        listed = await server.jobs.ListJobs(pb.ListJobsRequest(page_size=100))
        assert {job.id for job in listed.jobs} >= set(made)
        # the lease held through the upgrade is still the worker's, with its epoch
        leased = next(k for k, v in made.items() if v == "leased")
        got = (await server.jobs.GetJob(pb.GetJobRequest(id=leased))).job
        assert got.state == j.JOB_STATE_RUNNING
        done = await server.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=leased, epoch=held.epoch, worker_id="w1")
        )
        assert done.job.state == j.JOB_STATE_COMPLETED
        # the idempotency key still maps to its job
        again = await server.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="remote.thing", idempotency_key="once")
        )
        assert again.already_exists and again.job.id == leased
        # the recurring job keeps firing
        recurring = next(k for k, v in made.items() if v == "recurring")
        runs = (await server.jobs.GetJob(pb.GetJobRequest(id=recurring))).job.execution_count

        async def fired() -> bool:
            job = (await server.jobs.GetJob(pb.GetJobRequest(id=recurring))).job
            return job.execution_count >= runs + 2

        await _until(fired)


async def test_two_servers_starting_together_migrate_an_old_database_once(db_url: str) -> None:
    from contextlib import AsyncExitStack

    from jobwheel.server.storage import open_store
    from jobwheel.server.storage.migrations import latest_version

    from tests.integration.storage.test_migrations import back_to, stamped

    if not db_url.startswith("postgresql"):
        pytest.skip("one server per SQLite file")
    async with running_server(db_url) as server:
        made = await _jobs_in_every_state(server)
    store = await open_store(db_url)
    await back_to(store, 1)
    await store.close()
    async with AsyncExitStack() as stack:
        a, b = await asyncio.gather(
            stack.enter_async_context(running_server(db_url)),
            stack.enter_async_context(running_server(db_url)),
        )
        assert a.app.store is not None
        assert await stamped(a.app.store) == [latest_version()]
        for job_id in made:
            got_a = (await a.jobs.GetJob(pb.GetJobRequest(id=job_id))).job
            got_b = (await b.jobs.GetJob(pb.GetJobRequest(id=job_id))).job
            assert got_a.id == got_b.id == job_id
        job = await enqueue(b, task="test.echo")
        assert (await wait_for_state(a.jobs, job.id)).state == j.JOB_STATE_COMPLETED


async def test_an_older_server_refuses_a_newer_schema_in_one_line(db_url: str) -> None:
    import subprocess
    import sys

    from jobwheel.server.storage import open_store
    from jobwheel.server.storage.migrations import latest_version

    store = await open_store(db_url)
    async with store.write_engine.begin() as conn:
        await conn.execute(
            text("UPDATE schema_version SET version = :v"), {"v": latest_version() + 1}
        )
    await store.close()
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).parent / "jobwheel-server"),
            "--listen",
            "127.0.0.1:0",
            "--db",
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"database schema version {latest_version() + 1} is newer" in lines[0]
    # nothing was written: the stamp is still the newer one
    store_again_refused = None
    try:
        store_again_refused = await open_store(db_url)
    except Exception as exc:
        assert "newer" in str(exc)
    assert store_again_refused is None


# ---------------------------------------------------------------------------------------------
# compaction by time leaves holes in the log when event times are not in revision order


async def test_compaction_of_skewed_replicas_never_skips_events_silently(db_url: str) -> None:
    """Events are not stamped in revision order (replica B's clock here is 5 s behind A's):
    compaction takes only a head of the log, never an event between kept ones, which a replay
    resuming before it would skip without a word."""
    from jobwheel.server.clock import FakeClock

    if not db_url.startswith("postgresql"):
        pytest.skip("replicas share PostgreSQL")
    async with running_server(db_url) as a:
        skewed = FakeClock(now_us() - 5 * SECOND)  # B's clock: 5 s behind
        async with running_server(db_url, skewed) as b:
            await enqueue(a, task="nobody")  # the watcher saw this one, then lost touch
            first = await enqueue(a, task="nobody")
            middle = await enqueue(b, task="nobody")
            last = await enqueue(a, task="nobody")
            assert a.app.store is not None
            head = await a.app.store.head_revision()
            # the log is compacted up to a point between B's event and A's first one
            pruned = await a.app.store.prune_events(skewed.now() + SECOND)
            call = a.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=head - 3))
            try:
                got = [m.event.job.id for m in await take(call, 2)]
            except grpc.aio.AioRpcError as err:  # what it should say, if it cannot replay
                assert err.code() == grpc.StatusCode.OUT_OF_RANGE
                return
            finally:
                call.cancel()
            assert pruned == 0  # a head of the log only: B's event is kept with A's around it
            assert got == [first.id, middle.id], (
                f"replay from {head - 3} skipped the event of {middle.id}: got {got}"
            )
            del last


# ---------------------------------------------------------------------------------------------
# maintenance on several replicas


async def test_two_replicas_pruning_at_once_neither_deadlock_nor_fail(db_url: str) -> None:
    """Leadership keeps one pruner, but a leader change mid-prune (or the old leader's duty
    still running) has two: both run their whole pruning duty at once, with enqueues going on
    meanwhile, and between them remove every finished job and every old event once."""
    if not db_url.startswith("postgresql"):
        pytest.skip("replicas share PostgreSQL")
    async with running_server(db_url, retention=60) as a, running_server(db_url, retention=60) as b:
        await _finished_jobs(a, 5 * PRUNE_BATCH + 7, now_us() - 2 * DAY * SECOND)
        await _old_events(a, 20_000, now_us() - 2 * DAY * SECOND)
        await b.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody"))  # the log's newest event
        now = now_us()
        runs = asyncio.gather(pruning(a).run(now), pruning(b).run(now))
        waits = await _enqueue_latencies(b, asyncio.ensure_future(runs))
        assert waits
        assert a.app.store is not None
        async with a.app.store.read_engine.connect() as conn:
            left = await conn.execute(text("SELECT id, state FROM jobs WHERE id LIKE 'done-%'"))
            assert left.all() == []
            old = await conn.execute(
                text("SELECT count(*) FROM events WHERE time < :t"), {"t": now - DAY * SECOND}
            )
            assert old.scalar_one() == 0


async def test_a_cancelled_lease_pruned_by_retention_answers_the_worker_cleanly(
    db_url: str,
) -> None:
    """A remote job cancelled while RUNNING ends at once (CANCELLED, end_time set) while the
    worker may hold its lease for longer than --retention: after the prune, the worker's
    heartbeat and completion get a clear answer (NOT_FOUND / FAILED_PRECONDITION or a cancel
    request), never INTERNAL or UNKNOWN."""
    from jobwheel.v1 import worker_service_pb2 as wpb

    async with running_server(db_url, retention=60) as server:
        job = await enqueue(server, task="remote.thing")
        lease = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(
                worker_id="w1",
                tasks=["remote.thing"],
                max_jobs=1,
                lease_duration=duration_pb2.Duration(seconds=3600),
            )
        )
        [held] = lease.leases
        await server.jobs.CancelJob(pb.CancelJobRequest(id=job.id))
        await pruning(server).run(now_us() + 120 * SECOND)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await server.jobs.GetJob(pb.GetJobRequest(id=job.id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        clean = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
        try:
            beat = await server.workers.HeartbeatJob(
                wpb.HeartbeatJobRequest(job_id=job.id, epoch=held.epoch, worker_id="w1")
            )
            assert beat.cancel_requested
        except grpc.aio.AioRpcError as err:
            assert err.code() in clean, (err.code(), err.details())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await server.workers.CompleteJob(
                wpb.CompleteJobRequest(job_id=job.id, epoch=held.epoch, worker_id="w1")
            )
        assert info.value.code() in clean, (info.value.code(), info.value.details())


# ---------------------------------------------------------------------------------------------
# WatchJobs at the compaction point


async def test_watch_resumes_exactly_at_the_compaction_point(db_url: str) -> None:
    """since_revision = oldest kept - 1 (the watcher saw the last event compacted away)
    replays from the oldest kept event; one further back is OUT_OF_RANGE REVISION_COMPACTED,
    with the oldest available revision in its ErrorInfo."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    async with running_server(db_url, event_retention=60) as server:
        ids = [(await enqueue(server, task="nobody")).id for _ in range(6)]
        store = server.app.store
        assert store is not None
        await pruning(server).run(now_us() + 61 * SECOND)  # the duty: all but the newest
        await enqueue(server, task="nobody")
        oldest = await store.oldest_revision()
        assert oldest is not None and oldest == await store.head_revision() - 1
        call = server.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=oldest - 1))
        got = await take(call, 2)
        call.cancel()
        assert [m.event.revision for m in got] == [oldest, oldest + 1]
        assert got[0].event.job.id == ids[-1]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in server.jobs.WatchJobs(pb.WatchJobsRequest(since_revision=oldest - 2)):
                pass
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        status = rpc_status.from_call(info.value)  # type: ignore[arg-type]
        assert status is not None
        infos = []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                e = error_details_pb2.ErrorInfo()
                detail.Unpack(e)
                infos.append(e)
        assert [(e.reason, e.metadata["oldest_revision"]) for e in infos] == [
            ("REVISION_COMPACTED", str(oldest))
        ]


# ---------------------------------------------------------------------------------------------
# schema 8: the epoch of a job that had leases before the upgrade


async def test_a_lease_after_the_epoch_upgrade_never_repeats_an_earlier_fencing_number(
    db_url: str,
) -> None:
    """Up to schema 7 a lease's fencing number was its attempt number; schema 8 started the
    epoch of jobs without a lease at 0, so a job whose attempt 1 had lost its lease got epoch
    1 again for attempt 2, and a late report of attempt 1 settled it. Schema 9 raises them
    past every attempt number on record."""
    from jobwheel.server.storage import open_store
    from jobwheel.v1 import worker_service_pb2 as wpb

    from tests.integration.storage.test_migrations import back_to

    second = duration_pb2.Duration(seconds=1)
    async with running_server(db_url, recover_interval=0.1) as server:
        job = await enqueue(
            server,
            task="remote.thing",
            retry_policy=j.RetryPolicy(max_attempts=5, initial_backoff=second, max_backoff=second),
        )
        lost = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(
                worker_id="w1", tasks=["remote.thing"], max_jobs=1, lease_duration=second
            )
        )
        [first] = lost.leases
        assert first.epoch == 1
        await wait_for_state(
            server.jobs, job.id, (j.JOB_STATE_RETRYING, j.JOB_STATE_QUEUED), within=8
        )
    store = await open_store(db_url)
    await back_to(store, 7)  # the database as release 7 left it: attempt 1 lost, no epoch
    await store.close()

    async with running_server(db_url) as server:
        await wait_for_state(server.jobs, job.id, (j.JOB_STATE_QUEUED,), within=8)
        again = await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(
                worker_id="w1",
                tasks=["remote.thing"],
                max_jobs=1,
                lease_duration=duration_pb2.Duration(seconds=60),
            )
        )
        [live] = again.leases
        assert live.job.attempt == 2
        # the same worker process (the SDK's id is host:pid) may still run attempt 1 and
        # report it with epoch 1: only a new epoch tells the two apart
        assert live.epoch > first.epoch, (
            f"the live lease of attempt 2 got epoch {live.epoch}, the number the lost lease "
            f"of attempt 1 carried ({first.epoch})"
        )


async def test_compaction_keeps_the_events_not_yet_handed_to_subscriptions(store: Store) -> None:
    # a backlog of deliveries (the hand-over behind, say after an outage) is not compacted
    # away: those events would never become deliveries
    sub = EventSubscription(
        id="sub-1",
        url="http://127.0.0.1:9/hook",
        event_types=frozenset({EventType.ENQUEUED}),
        secret="s" * 32,
        create_time=T0,
    )
    assert await store.add_subscription(sub, limit=10)
    await store.insert_jobs([new_job() for _ in range(5)])
    handed, head = await store.delivery_cursor()
    later = now_us() + DAY * SECOND
    assert await store.prune_events(later) == 0  # none handed over yet
    assert await store.advance_delivery_cursor(handed, head - 2)
    assert await store.prune_events(later) == head - 2  # up to the cursor
    assert await store.delete_subscription(sub.id)
    assert await store.prune_events(later) == 1  # no subscription: all but the newest
