"""BatchEnqueueJobs of more jobs than one insert takes (ENQUEUE_CHUNK), without idempotency
keys: they are created in chunks in one transaction, each chunk validated while the database
inserts the one before (on SQLite while no other write holds the writer, as here: a single
caller). Every outcome is the one-piece path's: all jobs created in order, or nothing, with
the same error."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from jobwheel.server.api.job_service import ENQUEUE_CHUNK, MAX_BATCH
from jobwheel.server.model import Job, NewJob
from jobwheel.server.security.roles import Role
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.server.storage import Store
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from sqlalchemy import text

from tests.conftest import Running, running_server
from tests.integration.api.helpers import field_violations
from tests.integration.api.test_enqueue import payload
from tests.integration.security.conftest import Tokens

N = 2 * ENQUEUE_CHUNK + 100  # three chunks: two full, one short


@pytest.fixture
def chunk_sizes(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The chunk sizes of each chunked insert the server makes."""
    calls: list[list[int]] = []
    chunked = Store.insert_new_jobs_in_chunks

    async def spy(self: Store, chunks: Iterator[Sequence[NewJob]]) -> list[Job]:
        sizes: list[int] = []
        calls.append(sizes)

        def counted() -> Iterator[Sequence[NewJob]]:
            for chunk in chunks:
                sizes.append(len(chunk))
                yield chunk

        return await chunked(self, counted())

    monkeypatch.setattr(Store, "insert_new_jobs_in_chunks", spy)
    return calls


def _requests(n: int = N, queue: str = "") -> list[pb.EnqueueJobRequest]:
    """Jobs alike but in the second chunk, where labels, priorities and queues vary."""
    reqs = [
        pb.EnqueueJobRequest(task="nobody.takes", queue=queue, payload=payload(i=i))
        for i in range(n)
    ]
    for i in range(ENQUEUE_CHUNK, min(n, 2 * ENQUEUE_CHUNK), 3):
        reqs[i].labels["k"] = f"v{i % 2}"
        reqs[i].priority = i % 5
        reqs[i].queue = reqs[i].queue or f"q{i % 2}"
    return reqs


async def _stored(server: Running) -> tuple[int, int]:
    """How many jobs and events the database holds."""
    assert server.app.store is not None
    async with server.app.store.read_engine.connect() as conn:
        jobs = (await conn.execute(text("SELECT count(*) FROM jobs"))).scalar_one()
        events = (await conn.execute(text("SELECT count(*) FROM events"))).scalar_one()
    return int(jobs), int(events)


async def _settled(server: Running) -> tuple[int, int]:
    """_stored once it stays the same for half a second (within 30 s)."""
    last = await _stored(server)
    for _ in range(60):
        await asyncio.sleep(0.5)
        now = await _stored(server)
        if now == last:
            return now
        last = now
    raise AssertionError(f"still changing: {last}")


async def _writer_free(server: Running) -> None:
    """Waits (up to 10 s) until a batch would go in chunks: on SQLite the server's start-up
    writes are done and no other write holds the writer."""
    assert server.app.store is not None
    for _ in range(200):
        if server.app.store.chunks_now():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the writer stayed busy")


async def test_every_job_is_created_in_order_with_its_events(
    server: Running, chunk_sizes: list[list[int]]
) -> None:
    reqs = _requests()
    await _writer_free(server)
    reply = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    assert chunk_sizes == [[ENQUEUE_CHUNK, ENQUEUE_CHUNK, 100]]
    ids = [r.job.id for r in reply.results]
    assert len(set(ids)) == N and ids == sorted(ids)
    assert not any(r.already_exists for r in reply.results)
    for i, (req, result) in enumerate(zip(reqs, reply.results, strict=True)):
        assert (result.job.task, result.job.priority, dict(result.job.labels)) == (
            req.task,
            req.priority,
            dict(req.labels),
        )
        assert result.job.queue == (req.queue or "default") and result.job.payload == req.payload
        if i % 37 == 0 or i == N - 1:  # the reply is what is stored
            got = await server.jobs.GetJob(pb.GetJobRequest(id=result.job.id))
            assert got.job == result.job
    assert await _stored(server) == (N, N)
    assert server.app.store is not None
    async with server.app.store.read_engine.connect() as conn:
        logged = (await conn.execute(text("SELECT job_id FROM events ORDER BY revision"))).all()
    assert [row[0] for row in logged] == ids  # one ENQUEUED event each, in the batch's order


async def test_violations_in_any_chunk_create_nothing(
    server: Running, chunk_sizes: list[list[int]]
) -> None:
    reqs = _requests()
    reqs[3].task = ""
    reqs[ENQUEUE_CHUNK + 1].labels["bad\x01key"] = "v"
    reqs[N - 1].task = "not a name"
    await _writer_free(server)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(info.value)
    assert list(violations) == [
        "jobs[3].task",
        f"jobs[{ENQUEUE_CHUNK + 1}].labels['bad\\x01key']",
        f"jobs[{N - 1}].task",
    ]
    assert await _stored(server) == (0, 0)
    # only the last job refused: the first chunks went in, and were rolled back
    only_last = _requests()
    only_last[N - 1].task = ""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=only_last))
    assert list(field_violations(info.value)) == [f"jobs[{N - 1}].task"]
    assert await _stored(server) == (0, 0)
    # the first chunk refused: nothing sent; then two chunks sent and rolled back
    assert chunk_sizes == [[], [ENQUEUE_CHUNK, ENQUEUE_CHUNK]]
    only_last[N - 1].task = "fixed"
    reply = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=only_last))
    assert len(reply.results) == N and await _stored(server) == (N, N)


async def test_a_batch_at_the_chunk_size_goes_in_one_piece(
    server: Running, chunk_sizes: list[list[int]]
) -> None:
    reply = await server.jobs.BatchEnqueueJobs(
        pb.BatchEnqueueJobsRequest(jobs=_requests(ENQUEUE_CHUNK))
    )
    assert len(reply.results) == ENQUEUE_CHUNK and chunk_sizes == []
    keyed = _requests(ENQUEUE_CHUNK + 1)
    keyed[-1].idempotency_key = "k"  # a key to look up: the one-piece path
    reply = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=keyed))
    assert len(reply.results) == ENQUEUE_CHUNK + 1 and chunk_sizes == []


@pytest.fixture
async def scoped(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Running, Any]]:
    tokens = Tokens(tmp_path / "tokens.toml")
    tokens.add("mail-ci", Role.PRODUCER, ("emails",))
    settings = SecuritySettings(auth_tokens=str(tokens.path))
    async with running_server(db_url, security=settings) as server:
        yield server, tokens.bearer("mail-ci")


async def test_a_denied_queue_creates_nothing_and_comes_after_violations(
    scoped: tuple[Running, Any], chunk_sizes: list[list[int]]
) -> None:
    server, bearer = scoped
    reqs = [pb.EnqueueJobRequest(task="t", queue="emails", payload=payload(i=i)) for i in range(N)]
    reqs[N - 50].queue = "sms"
    await _writer_free(server)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs), metadata=bearer)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert f"jobs[{N - 50}].queue" in (denied.value.details() or "")
    reqs[N - 10].task = ""
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs), metadata=bearer)
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(invalid.value)) == [f"jobs[{N - 10}].task"]
    assert await _stored(server) == (0, 0)
    assert chunk_sizes
    reqs[N - 50].queue = "emails"
    reqs[N - 10].task = "t"
    reply = await server.jobs.BatchEnqueueJobs(
        pb.BatchEnqueueJobsRequest(jobs=reqs), metadata=bearer
    )
    assert {r.job.queue for r in reply.results} == {"emails"}
    assert all(r.job.state == job_pb2.JOB_STATE_QUEUED for r in reply.results)


async def test_a_batch_cut_short_by_its_deadline_is_all_or_nothing(
    server: Running, chunk_sizes: list[list[int]]
) -> None:
    """The call ends at its deadline while chunks are being inserted: the transaction is
    rolled back, or had committed whole (a deadline's outcome is unknown to the caller); the
    server serves on."""
    reqs = pb.BatchEnqueueJobsRequest(jobs=_requests(MAX_BATCH))
    ended = []
    for timeout in (0.01, 0.03, 0.1, 0.3):
        try:
            await server.jobs.BatchEnqueueJobs(reqs, timeout=timeout)
            ended.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as err:
            ended.append(err.code())
        jobs, events = await _stored(server)
        assert jobs % MAX_BATCH == 0 and events == jobs
    assert grpc.StatusCode.DEADLINE_EXCEEDED in ended
    jobs, events = await _settled(server)  # rolled back, or committed whole
    assert jobs % MAX_BATCH == 0 and events == jobs
    assert jobs // MAX_BATCH >= ended.count(grpc.StatusCode.OK)
    reply = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=_requests()))
    assert len(reply.results) == N and await _stored(server) == (jobs + N, events + N)


async def test_concurrent_batches_and_single_enqueues_all_land_in_order(
    server: Running, chunk_sizes: list[list[int]]
) -> None:
    """Large batches from several callers at once beside single enqueues (on SQLite the first
    batch, alone at first, mostly goes in chunks, the others in chunks or through the group
    commit, whichever the writer allows when they come): every job is created once, each
    call's jobs in its order, and the event log holds one ENQUEUED event per job, its
    revisions gap-free and each call's events in its order."""
    await _writer_free(server)
    batches = [
        [pb.EnqueueJobRequest(task="nobody.takes", payload=payload(b=b, i=i)) for i in range(N)]
        for b in range(5)
    ]
    singles = [pb.EnqueueJobRequest(task="nobody.takes", payload=payload(s=s)) for s in range(40)]
    first = asyncio.ensure_future(
        server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=batches[0]))
    )
    await asyncio.sleep(0.002)  # it comes to an idle server
    rest = asyncio.gather(
        *(server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=b)) for b in batches[1:]),
        *(server.jobs.EnqueueJob(req) for req in singles),
    )
    replies = [await first, *await rest]
    batch_ids = [[r.job.id for r in reply.results] for reply in replies[: len(batches)]]
    for reqs, ids, reply in zip(batches, batch_ids, replies, strict=False):
        assert [r.job.payload for r in reply.results] == [req.payload for req in reqs]
        assert ids == sorted(ids)
    assert server.app.store is not None
    if not server.app.store.dialect.single_writer:
        assert len(chunk_sizes) == len(batches)  # on SQLite as the writer allowed
    single_ids = [reply.job.id for reply in replies[len(batches) :]]
    every = [job_id for ids in batch_ids for job_id in ids] + single_ids
    assert len(set(every)) == len(every) == 5 * N + 40
    async with server.app.store.read_engine.connect() as conn:
        logged = (await conn.execute(text("SELECT revision, job_id FROM events"))).all()
        seqs = dict((await conn.execute(text("SELECT id, seq FROM jobs"))).all())
    revisions = sorted(revision for revision, _ in logged)
    assert revisions == list(range(revisions[0], revisions[0] + len(every)))
    revision_of = {job_id: revision for revision, job_id in logged}
    assert set(revision_of) == set(every)
    for ids in batch_ids:  # a call's jobs: seqs and revisions in the call's order
        assert [seqs[i] for i in ids] == sorted(seqs[i] for i in ids)
        assert [revision_of[i] for i in ids] == sorted(revision_of[i] for i in ids)


async def test_a_batch_cancelled_while_its_first_chunk_waits_in_sqlite_leaves_the_writer_clean(
    tmp_path: Path,
) -> None:
    """SQLite: a call cancelled while its first chunk still waits in the driver's thread (here
    for the write lock, which another connection holds) hands the writer on only once that
    work has run and been rolled back: nothing of the batch is stored, and the next enqueue
    is not refused (it was INTERNAL: "cannot start a transaction within a transaction")."""
    path = tmp_path / "jobwheel.db"
    async with running_server(f"sqlite:///{path}") as server:
        await _writer_free(server)
        outside = sqlite3.connect(path, isolation_level=None)
        try:
            outside.execute("BEGIN IMMEDIATE")  # the first chunk's BEGIN IMMEDIATE waits
            call = server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=_requests()))
            await asyncio.sleep(0.3)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            single = asyncio.ensure_future(
                server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody.takes"), timeout=15)
            )
            await asyncio.sleep(0.3)  # queued behind the cancelled call's work
        finally:
            outside.execute("ROLLBACK")
            outside.close()
        reply = await single
        assert reply.job.state == job_pb2.JOB_STATE_QUEUED
        assert await _settled(server) == (1, 1)
