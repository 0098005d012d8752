"""PostgreSQL outages met by a running server: backends killed (the enqueues' own connection,
dialect.PG_ENQUEUE_SETTINGS, between enqueues and during one, with many enqueues queued
behind it), connections refused, the database gone as the server starts, a network that
stops carrying packets. The server answers UNAVAILABLE meanwhile, serves on afterwards
without a restart (enqueues, dispatch, reads), loses no acknowledged job, and stops within
its few seconds."""

from __future__ import annotations

import asyncio
import collections
import os
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb
from sqlalchemy.engine import make_url

from tests.acceptance.tcp_proxy import TcpProxy
from tests.conftest import PG_ENV, Running, running_server, unavailable
from tests.integration.api.waiting import wait_for_state

pytestmark = pytest.mark.postgres

DONE = (job_pb2.JOB_STATE_COMPLETED,)
OK = "OK"
UNAVAILABLE = "UNAVAILABLE"


@pytest.fixture
async def pg_db() -> AsyncIterator[tuple[str, str, asyncpg.Connection]]:
    """(url, name, admin connection on the base database) of a database of the test's own,
    dropped afterwards."""
    base = os.environ.get(PG_ENV, "")
    if not base:
        unavailable(f"{PG_ENV} is not set")
    admin = await asyncpg.connect(base)
    name = f"jwreview_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(False), name, admin
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def proxied(
    pg_db: tuple[str, str, asyncpg.Connection],
) -> AsyncIterator[tuple[str, str, asyncpg.Connection, TcpProxy]]:
    url, name, admin = pg_db
    u = make_url(url)
    proxy = await TcpProxy(u.host or "127.0.0.1", u.port or 5432).start()
    try:
        yield u.set(host="127.0.0.1", port=proxy.port).render_as_string(False), name, admin, proxy
    finally:
        await proxy.close()


def enqueue_driver(running: Running) -> object | None:
    held = running.app.store._enqueuer
    assert held is not None
    for conn in held._idle:
        sync = conn.sync_connection
        if sync is not None and not sync.closed and not sync.invalidated:
            return sync.connection.driver_connection
    return None


async def terminate_all(admin: asyncpg.Connection, name: str) -> int:
    return int(
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    )


async def enqueue(
    running: Running, deadline: float = 10.0, batch: int = 0
) -> tuple[str, list[str]]:
    """(outcome, ids): outcome 'OK' or the status code's name; with `batch`, a
    BatchEnqueueJobs of that many."""
    try:
        if batch:
            reqs = [pb.EnqueueJobRequest(task="test.noop") for _ in range(batch)]
            reply = await running.jobs.BatchEnqueueJobs(
                pb.BatchEnqueueJobsRequest(jobs=reqs), timeout=deadline
            )
            return OK, [r.job.id for r in reply.results]
        one = await running.jobs.EnqueueJob(
            pb.EnqueueJobRequest(task="test.noop"), timeout=deadline
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, []
    return OK, [one.job.id]


async def stored_ids(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT id FROM jobs")]
    finally:
        await conn.close()


async def check_serving(running: Running, url: str, acknowledged: list[str]) -> None:
    """Enqueues work again (single and batch), their jobs run, reads work, and every
    acknowledged job is stored exactly once."""
    for _ in range(3):
        outcome, ids = await enqueue(running)
        assert outcome == OK
        acknowledged += ids
    outcome, ids = await enqueue(running, batch=5)
    assert outcome == OK
    acknowledged += ids
    await wait_for_state(running.jobs, acknowledged[-1], DONE, within=10)
    await wait_for_state(running.jobs, acknowledged[-6], DONE, within=10)
    stored = await stored_ids(url)
    assert len(stored) == len(set(stored))
    health = health_pb2_grpc.HealthStub(running.channel)
    for _ in range(100):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("health stays NOT_SERVING")
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged jobs are not stored"


async def test_a_killed_idle_enqueue_connection(pg_db: tuple[str, str, asyncpg.Connection]) -> None:
    url, _name, admin = pg_db
    async with running_server(url) as running:
        acknowledged: list[str] = []
        for round_ in range(3):
            outcome, ids = await enqueue(running)
            assert outcome == OK
            acknowledged += ids
            driver = enqueue_driver(running)
            assert driver is not None
            pid = driver.get_server_pid()  # type: ignore[attr-defined]
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            if round_ > 0:  # the driver reads of its end: the next enqueue takes a new one
                for _ in range(200):
                    if driver.is_closed():  # type: ignore[attr-defined]
                        break
                    await asyncio.sleep(0.01)
                outcome, ids = await enqueue(running)
                assert outcome == OK
            else:  # at once: the enqueue that meets it may answer UNAVAILABLE
                outcome, ids = await enqueue(running)
                assert outcome in (OK, UNAVAILABLE)
            acknowledged += ids
        await check_serving(running, url, acknowledged)


@pytest.mark.parametrize("refuse", [False, True])
async def test_a_kill_during_an_enqueue_with_callers_queued_behind(
    proxied: tuple[str, str, asyncpg.Connection, TcpProxy], refuse: bool
) -> None:
    """The enqueue statement waits for the event log's head (held by the test), its backend
    is killed meanwhile, 40 callers wait behind it; with `refuse`, PostgreSQL cannot be
    reached from then on for 2 s."""
    url, name, admin, proxy = proxied
    direct = make_url(url).set(port=admin._addr[1]).render_as_string(False)  # type: ignore[attr-defined]
    async with running_server(url) as running:
        acknowledged: list[str] = []
        outcome, ids = await enqueue(running)
        assert outcome == OK
        acknowledged += ids
        holder = await asyncpg.connect(direct)
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM event_head FOR UPDATE")
        first = asyncio.ensure_future(enqueue(running, deadline=10))
        pid = None
        for _ in range(300):
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
                " AND query LIKE '%generate_series%'",
                name,
            )
            if pid:
                break
            await asyncio.sleep(0.01)
        assert pid, "the enqueue never waited for the head"
        start = time.monotonic()
        behind = [asyncio.ensure_future(enqueue(running, deadline=10)) for _ in range(30)]
        behind += [asyncio.ensure_future(enqueue(running, deadline=10, batch=3)) for _ in range(10)]
        await asyncio.sleep(0.3)
        if refuse:
            await proxy.cut()  # every connection reset, new ones refused
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await tx.rollback()
        await holder.close()
        if refuse:
            await asyncio.sleep(2)
            await proxy.restore()
        outcomes = await asyncio.gather(first, *behind)
        took = time.monotonic() - start
        counts = collections.Counter(o for o, _ in outcomes)
        assert set(counts) <= {OK, UNAVAILABLE}, counts
        assert took < 10.5
        for _, ids in outcomes:
            acknowledged += ids
        assert outcomes[0][0] == UNAVAILABLE  # its statement was rolled back
        stored = set(await stored_ids(direct))
        assert set(acknowledged) <= stored
        assert stored <= set(acknowledged), "a job not acknowledged is stored"
        await check_serving(running, direct, acknowledged)


async def test_enqueues_while_postgresql_refuses_then_serves_again(
    proxied: tuple[str, str, asyncpg.Connection, TcpProxy],
) -> None:
    url, _name, admin, proxy = proxied
    direct = make_url(url).set(port=admin._addr[1]).render_as_string(False)  # type: ignore[attr-defined]
    async with running_server(url) as running:
        acknowledged: list[str] = []
        _outcome, ids = await enqueue(running)
        acknowledged += ids
        await proxy.cut()
        start = time.monotonic()
        outcomes = await asyncio.gather(
            *(enqueue(running, deadline=10) for _ in range(40)),
            *(enqueue(running, deadline=10, batch=4) for _ in range(10)),
        )
        took = time.monotonic() - start
        counts = collections.Counter(o for o, _ in outcomes)
        assert counts == {UNAVAILABLE: 50}
        assert took < 10
        await proxy.restore()
        await check_serving(running, direct, acknowledged)
        assert len(await stored_ids(direct)) == len(acknowledged)


async def test_repeated_kills_while_many_enqueue(
    pg_db: tuple[str, str, asyncpg.Connection],
) -> None:
    """Enqueues (single, batch, keyed with retries) while every backend of the database is
    killed every 50 ms and enqueue statements mid-way: every answer is OK or UNAVAILABLE,
    each key has one job, acknowledged jobs are stored, and they run (a kill may meet the
    dispatcher's first statement: see test_dispatch_survives_an_outage_right_after_start)."""
    url, name, admin = pg_db
    async with running_server(url) as running:
        acknowledged: list[str] = []
        outcomes: collections.Counter[str] = collections.Counter()
        stop = time.monotonic() + 4
        late: list[float] = []

        async def caller(batch: int) -> None:
            while time.monotonic() < stop:
                t = time.monotonic()
                outcome, ids = await enqueue(running, deadline=10, batch=batch)
                late.append(time.monotonic() - t)
                outcomes[outcome] += 1
                acknowledged.extend(ids)

        async def killer() -> None:
            while time.monotonic() < stop:
                await terminate_all(admin, name)
                await asyncio.sleep(0.05)

        async def mid_statement_killer() -> None:
            own = await asyncpg.connect(os.environ[PG_ENV])  # not killed with the db's
            while time.monotonic() < stop:
                await own.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND state = 'active'"
                    " AND query LIKE '%generate_series%' AND query NOT LIKE '%pg_stat%'",
                    name,
                )
                await asyncio.sleep(0.002)
            await own.close()

        keyed: dict[str, str] = {}

        async def keyed_caller(k: int) -> None:
            n = 0
            while time.monotonic() < stop:
                key = f"k{k}-{n}"
                n += 1
                for _ in range(50):  # as the clients retry a keyed enqueue
                    req = pb.EnqueueJobRequest(task="test.noop", idempotency_key=key)
                    try:
                        reply = await running.jobs.EnqueueJob(req, timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        outcomes[exc.code().name] += 1
                        await asyncio.sleep(0.01)
                        continue
                    assert keyed.setdefault(key, reply.job.id) == reply.job.id
                    break

        await asyncio.gather(
            killer(),
            mid_statement_killer(),
            *(caller(i % 3) for i in range(24)),
            *(keyed_caller(k) for k in range(4)),
        )
        assert set(outcomes) <= {OK, UNAVAILABLE}, outcomes
        assert outcomes[OK] > 0 and keyed
        assert max(late) < 10
        acknowledged += keyed.values()
        conn = await asyncpg.connect(url)
        try:
            per_key = await conn.fetch(
                "SELECT idempotency_key, count(*) FROM jobs WHERE idempotency_key IS NOT NULL"
                " GROUP BY 1 HAVING count(*) > 1"
            )
        finally:
            await conn.close()
        assert not per_key
        await asyncio.sleep(0.5)
        await check_serving(running, url, acknowledged)


async def test_stop_with_the_enqueue_connection_broken(
    proxied: tuple[str, str, asyncpg.Connection, TcpProxy],
) -> None:
    url, _name, _admin, proxy = proxied
    async with running_server(url) as running:
        assert (await enqueue(running))[0] == OK
        await proxy.cut()
        calls = [asyncio.ensure_future(enqueue(running, deadline=10)) for _ in range(20)]
        await asyncio.sleep(0.1)
        await asyncio.wait_for(running.app.stop(0.5), 8)
        outcomes = await asyncio.wait_for(asyncio.gather(*calls), 5)
        assert {o for o, _ in outcomes} <= {UNAVAILABLE, OK, "CANCELLED"}, outcomes
        await proxy.restore()


@pytest.mark.parametrize("in_flight", [False, True])
async def test_stop_with_the_network_to_postgresql_frozen(
    pg_db: tuple[str, str, asyncpg.Connection], in_flight: bool
) -> None:
    """The network to PostgreSQL drops packets (nothing refused or reset), with or without
    enqueues in flight: stop returns within seconds (the README: an exit within about 7 s of
    SIGTERM). Closing a connection waits for the server's end of it, which never comes, and
    the event log's LISTEN connection waits for its UNLISTEN: both are bounded."""
    url, _name, _admin = pg_db
    u = make_url(url)
    proxy = await TcpProxy(u.host or "127.0.0.1", u.port or 5432).start()
    purl = u.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    from jobwheel.server.app import App
    from jobwheel.server.config import Settings

    import tests.handlers  # noqa: F401

    app = App(Settings(listen="127.0.0.1:0", db=purl, grace_period=1.0))
    port = await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stopping: asyncio.Future[None] | None = None
    try:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        await stub.EnqueueJob(pb.EnqueueJobRequest(task="test.noop"), timeout=5)
        proxy.freeze()
        calls = []
        if in_flight:  # an enqueue statement sent, its answer never coming
            calls = [
                asyncio.ensure_future(stub.EnqueueJob(pb.EnqueueJobRequest(task="test.noop")))
                for _ in range(5)
            ]
            await asyncio.sleep(0.3)
        start = time.monotonic()
        stopping = asyncio.ensure_future(app.stop(0.5))
        done, _ = await asyncio.wait([stopping], timeout=8)
        took = time.monotonic() - start
        for call in calls:
            call.cancel()
        assert done, f"App.stop had not returned {took:.1f} s later"
    finally:
        proxy.thaw()  # lets a hung stop end
        if stopping is not None:
            await asyncio.wait_for(stopping, 10)
        await channel.close()
        await proxy.close()


async def test_enqueues_while_the_database_refuses_connections(
    pg_db: tuple[str, str, asyncpg.Connection],
) -> None:
    """PostgreSQL refusing new connections to the database (ALLOW_CONNECTIONS false:
    "database ... is not currently accepting connections", SQLSTATE 55000 at connection
    start) is an outage: enqueues and reads answer UNAVAILABLE (they answered INTERNAL),
    and the server serves on once it accepts them again."""
    url, name, admin = pg_db
    async with running_server(url) as running:
        acknowledged: list[str] = []
        _outcome, ids = await enqueue(running)
        acknowledged += ids
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await terminate_all(admin, name)
            await asyncio.sleep(0.1)
            outcomes = await asyncio.gather(*(enqueue(running) for _ in range(10)))
            read = OK
            try:
                await running.jobs.GetJob(pb.GetJobRequest(id=acknowledged[0]), timeout=5)
            except grpc.aio.AioRpcError as exc:
                read = exc.code().name
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await check_serving(running, url, acknowledged)
        assert {o for o, _ in outcomes} == {UNAVAILABLE}, outcomes
        assert read == UNAVAILABLE


async def test_dispatch_survives_an_outage_right_after_start(
    proxied: tuple[str, str, asyncpg.Connection, TcpProxy],
) -> None:
    """The database goes away (1 s) as the server starts serving, before the dispatcher's
    first read: the dispatcher retries it, and the jobs enqueued after run (its task ended
    there, and no job ran again until a restart)."""
    url, _name, _admin, proxy = proxied
    async with running_server(url) as running:
        await proxy.cut()  # no await inside: before the dispatcher's first statement
        await asyncio.sleep(1)
        await proxy.restore()
        outcomes = []
        for _ in range(20):  # the first after the outage may meet a connection it ended
            outcome, ids = await enqueue(running)
            outcomes.append(outcome)
            if outcome == OK:
                break
            await asyncio.sleep(0.1)
        await wait_for_state(running.jobs, ids[0], DONE, within=8)
