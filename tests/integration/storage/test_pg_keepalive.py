"""TCP keepalives on the server's PostgreSQL connections (storage/pg_keepalive.py): libpq's
URL parameters, checked at the edge, and set on the socket of every connection a running
server holds, so that a database host gone silent ends its connections within seconds.

A network that drops packets cannot be made on loopback without root's packet filters (a
proxy's kernel still answers the probes): the kernel's part is its own, these tests check
that every connection asks it."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from jobwheel.server.storage import StorageUrlError
from jobwheel.server.storage.dialect import parse_url
from jobwheel.server.storage.pg_keepalive import PARAMS, Keepalive
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from sqlalchemy.engine import make_url

from tests.conftest import PG_ENV, running_server, unavailable
from tests.integration.api.waiting import wait_for_state

BASE = "postgresql://u@h/db"


def test_defaults_end_a_silent_connection_within_about_25_s() -> None:
    parsed = parse_url(BASE)
    url, keepalive = parsed.url, parsed.keepalive
    assert keepalive == Keepalive()
    assert keepalive.enabled
    assert keepalive.idle_s + keepalive.interval_s * keepalive.count == 25
    assert keepalive.user_timeout_ms == 25_000
    assert not url.query


def test_libpq_names_are_read_and_taken_out_of_the_url() -> None:
    parsed = parse_url(
        f"{BASE}?keepalives_idle=7&keepalives_interval=2&keepalives_count=4"
        "&tcp_user_timeout=9000&options=-c%20search_path%3Ds1&ssl=require"
    )
    url, settings, keepalive = parsed.url, parsed.server_settings, parsed.keepalive
    assert keepalive == Keepalive(True, 7, 2, 4, 9000)
    assert settings == {"search_path": "s1"}
    assert not url.query  # ssl travels as the DSN's sslmode (test_pg_tls.py)
    off = parse_url(f"{BASE}?keepalives=0").keepalive
    assert off is not None and not off.enabled
    assert off.options() == [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)]


@pytest.mark.parametrize("name", list(PARAMS))
def test_each_parameter_at_its_limits_and_one_past(name: str) -> None:
    _default, low, high = PARAMS[name]
    for ok in (low, high):
        parse_url(f"{BASE}?{name}={ok}")
    for bad in (low - 1, high + 1):
        with pytest.raises(StorageUrlError, match=f"{name} must be an integer from {low} to"):
            parse_url(f"{BASE}?{name}={bad}")


@pytest.mark.parametrize(
    "value", ["ten", "1.5", "-1", "+5", " 5", "1_0", "\u0665", "0x10", "9" * 5000]
)
def test_garbage_values_are_refused_with_the_parameter_named(value: str) -> None:
    with pytest.raises(StorageUrlError, match="keepalives_idle must be an integer") as err:
        parse_url(f"{BASE}?keepalives_idle={value}")
    assert len(str(err.value)) < 200  # not echoed whole


def test_sqlite_urls_have_no_tcp_settings() -> None:
    assert parse_url("sqlite:///x.db").keepalive is None


def _pg_sockets(port: int, but: frozenset[str] = frozenset()) -> dict[str, socket.socket]:
    """This process's established TCP connections to `port` by inode, but those in `but`, as
    sockets on duplicated descriptors: read off /proc, as `ss -p` does."""
    inodes: set[str] = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        inode = target[8:-1]
        if target.startswith("socket:[") and inode in inodes and inode not in but:
            found[inode] = socket.socket(fileno=os.dup(int(fd)))
    return found


def _close(sockets: dict[str, socket.socket]) -> frozenset[str]:
    for sock in sockets.values():
        sock.close()
    return frozenset(sockets)


@pytest.fixture
async def schema_url() -> AsyncIterator[str]:
    """A URL to a new schema of the test database; no connection of the test's own stays
    open meanwhile (every connection to PostgreSQL in this process is then the server's)."""
    base = os.environ.get(PG_ENV, "")
    if not base:
        unavailable(f"{PG_ENV} is not set")
    schema = f"jwtest_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(base)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.close()
    try:
        yield (
            make_url(base)
            .update_query_dict({"options": f"-c search_path={schema}"})
            .render_as_string(False)
        )
    finally:
        conn = await asyncpg.connect(base)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


@pytest.mark.postgres
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and Linux's TCP options")
async def test_every_connection_of_a_running_server_asks_for_the_urls_keepalives(
    schema_url: str,
) -> None:
    url = make_url(schema_url).update_query_dict(
        {
            "keepalives_idle": "7",
            "keepalives_interval": "2",
            "keepalives_count": "4",
            "tcp_user_timeout": "9000",
        }
    )
    # connections left over from earlier tests in this process are not the server's
    earlier = _close(_pg_sockets(url.port or 5432))
    async with running_server(url.render_as_string(False)) as running:
        # enqueues (their own connection), dispatch, reads, the event log's LISTEN
        enqueued = await asyncio.gather(
            *(running.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.noop")) for _ in range(20))
        )
        for reply in enqueued:
            await wait_for_state(running.jobs, reply.job.id, (job_pb2.JOB_STATE_COMPLETED,))
        await running.jobs.ListJobs(pb.ListJobsRequest())
        sockets = _pg_sockets(url.port or 5432, earlier)
        try:
            assert len(sockets) >= 3, len(sockets)
            for sock in sockets.values():
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 9000
        finally:
            _close(sockets)


@pytest.mark.postgres
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and Linux's TCP options")
async def test_keepalives_0_turns_them_off(schema_url: str) -> None:
    url = make_url(schema_url).update_query_dict({"keepalives": "0"})
    earlier = _close(_pg_sockets(url.port or 5432))
    async with running_server(url.render_as_string(False)) as running:
        await running.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.noop"))
        sockets = _pg_sockets(url.port or 5432, earlier)
        try:
            assert sockets
            for sock in sockets.values():
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        finally:
            _close(sockets)
