"""The sync Client against a real server (in a thread: the server shares the event loop)."""

from __future__ import annotations

import asyncio

import pytest
from jobwheel.client import Client, InvalidArgument, NotFound, Unavailable
from jobwheel.v1 import job_pb2

from tests.conftest import Running


def scenario(address: str) -> None:
    with Client(address) as c:
        ids = [c.enqueue_job("test.noop", queue="s", delay="1h").job.id for _ in range(5)]
        assert [j.id for j in c.iter_jobs(queues=["s"], page_size=2, order=1)] == ids
        page = c.list_jobs(queues=["s"], page_size=2)
        assert len(page.jobs) == 2 and page.next_page_token
        done = c.wait_job(c.enqueue_job("test.echo", payload={"x": 1}).job.id)
        assert done.state == job_pb2.JOB_STATE_COMPLETED
        assert [a.number for a in c.iter_job_attempts(done.id)] == [1]
        with pytest.raises(NotFound):
            c.get_job("0190c7f5-0000-7000-8000-000000000000")
        with pytest.raises(InvalidArgument) as err:
            c.list_jobs(page_size=-1)
        assert [v.field for v in err.value.violations] == ["page_size"]


async def test_sync_client_against_a_real_server(server: Running) -> None:
    await asyncio.to_thread(scenario, server.address)


def test_env_address_and_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobwheel.client import Retry

    monkeypatch.setenv("JOBWHEEL_SERVER", "127.0.0.1:1")
    with Client(timeout=2, retry=Retry(attempts=2, initial_backoff=0.01)) as c:
        assert c.address == "127.0.0.1:1"
        with pytest.raises(Unavailable):
            c.get_job("x")
