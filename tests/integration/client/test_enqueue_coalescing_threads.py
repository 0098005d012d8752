"""The blocking Client's enqueue coalescing across threads (jobwheel.client.coalescing_threads):
against a real server, and against the scripted server (scripted.py), whose replies wait until
a test lets them go while the calls block in threads of their own."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
from jobwheel.client import Client, DeadlineExceeded, Unavailable
from jobwheel.client.coalescing import MAX_IN_FLIGHT
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.client.scripted import Scripted, thread_coalescer, until

# -- against jobwheel -------------------------------------------------------------------------


def _threads_then_one(address: str) -> None:
    """32 threads enqueue 10 jobs each, then one thread 3 more (the server shares this
    test's event loop: this runs in a thread)."""
    got: dict[int, pb.EnqueueJobResponse] = {}

    def caller(first: int, client: Client) -> None:
        for n in range(first, first + 10):
            got[n] = client.enqueue_job("test.noop", payload={"n": n}, queue="q")

    with Client(address) as client:
        threads = [
            threading.Thread(target=caller, args=(10 * k, client), daemon=True) for k in range(32)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads)
        assert sorted(got) == list(range(320))
        assert all(int(r.job.payload["n"]) == n for n, r in got.items())
        assert len({r.job.id for r in got.values()}) == 320
        assert thread_coalescer(client).sent < 320 / 2  # calls carried several jobs
        stored = list(client.iter_jobs(queues=["q"]))
        assert sorted(int(job.payload["n"]) for job in stored) == list(range(320))
        # one caller at a time: one EnqueueJob each
        before = thread_coalescer(client).sent
        for n in range(3):
            client.enqueue_job("test.noop", payload={"n": n}, queue="lone")
        assert thread_coalescer(client).sent == before + 3


async def test_threads_share_calls_and_each_caller_gets_its_own_job(server: Running) -> None:
    await asyncio.to_thread(_threads_then_one, server.address)


def _uncoalesced(address: str) -> None:
    with Client(address, coalesce=False) as client:
        assert client._enqueues is False
        assert client.enqueue_job("test.noop").job.id


async def test_without_coalescing_every_call_is_its_own(server: Running) -> None:
    await asyncio.to_thread(_uncoalesced, server.address)


# -- against a scripted server ----------------------------------------------------------------


class _Calls:
    """Blocking enqueue_job calls of one Client, each in a thread of its own (a daemon: one
    that a broken coalescer never wakes fails the test, not the run), awaitable."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def start(self, n: int, **options: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()

        def call() -> None:
            try:
                got: Any = self.client.enqueue_job("test.noop", payload={"n": n}, **options)
            except Exception as exc:  # the outcome, for the test to look at
                got = exc
            loop.call_soon_threadsafe(outcome.set_result, got)

        threading.Thread(target=call, daemon=True).start()
        return outcome

    async def places_taken(self, service: Scripted) -> list[asyncio.Future[Any]]:
        """MAX_IN_FLIGHT calls, each alone (made once the server holds the one before):
        calls made after them wait."""
        started: list[asyncio.Future[Any]] = []
        for n in range(MAX_IN_FLIGHT):
            started.append(self.start(n))
            await until(lambda: len(service.calls) == len(started))
        return started

    async def waiting(self, numbers: range) -> list[asyncio.Future[Any]]:
        """Calls made after the places were taken, each once the one before waits."""
        coalescer = thread_coalescer(self.client)
        queued = len(coalescer._waiting)
        started: list[asyncio.Future[Any]] = []
        for n in numbers:
            started.append(self.start(n))
            await until(lambda: len(coalescer._waiting) == queued + len(started))
        return started


async def _outcomes(calls: list[asyncio.Future[Any]]) -> list[Any]:
    return list(await asyncio.wait_for(asyncio.gather(*calls), 20))


async def _five_with_two_out(client: Client, service: Scripted) -> list[asyncio.Future[Any]]:
    calls = _Calls(client)
    first = await calls.places_taken(service)
    return first + await calls.waiting(range(MAX_IN_FLIGHT, 5))


def _seen(service: Scripted) -> list[tuple[str, list[int]]]:
    return [(method, numbers) for method, numbers, _ in service.calls]


async def _five_answered(
    scripted: tuple[Scripted, str], batch_status: grpc.StatusCode | None = None
) -> tuple[list[Any], int]:
    """Five calls, the last three waiting; the server answers them all (batches with
    `batch_status` when set): (each call's outcome, the calls the coalescer sent)."""
    service, address = scripted
    service.batch_status = batch_status
    with Client(address) as client:
        calls = await _five_with_two_out(client, service)
        service.open()
        return await _outcomes(calls), thread_coalescer(client).sent


async def test_the_calls_that_waited_leave_together(scripted: tuple[Scripted, str]) -> None:
    service, _ = scripted
    got, _ = await _five_answered(scripted)
    assert [r.job.id for r in got] == [f"job-{n}" for n in range(5)]
    seen = _seen(service)
    assert sorted(seen[:MAX_IN_FLIGHT]) == [("EnqueueJob", [0]), ("EnqueueJob", [1])]
    assert seen[MAX_IN_FLIGHT:] == [("BatchEnqueueJobs", [2, 3, 4])]


async def test_a_refused_batch_is_sent_again_call_by_call(scripted: tuple[Scripted, str]) -> None:
    service, _ = scripted
    got, sent = await _five_answered(scripted, grpc.StatusCode.INVALID_ARGUMENT)
    # each call alone got the answer it would have had: here, created
    assert [r.job.id for r in got] == [f"job-{n}" for n in range(5)]
    seen = _seen(service)
    assert seen[MAX_IN_FLIGHT] == ("BatchEnqueueJobs", [2, 3, 4])
    assert sorted(seen[MAX_IN_FLIGHT + 1 :]) == [("EnqueueJob", [n]) for n in (2, 3, 4)]
    assert sent == len(seen) == MAX_IN_FLIGHT + 1 + 3


async def test_a_failed_batch_fails_each_of_its_callers(scripted: tuple[Scripted, str]) -> None:
    service, _ = scripted
    got, _ = await _five_answered(scripted, grpc.StatusCode.UNAVAILABLE)
    assert [r.job.id for r in got[:MAX_IN_FLIGHT]] == ["job-0", "job-1"]
    assert all(isinstance(e, Unavailable) for e in got[MAX_IN_FLIGHT:]), got
    # not sent again: as for one call, the jobs may have been created
    assert [method for method, _ in _seen(service)].count("BatchEnqueueJobs") == 1


async def _two_calls_of_one_second_behind_two(
    client: Client, service: Scripted
) -> tuple[list[asyncio.Future[Any]], list[asyncio.Future[Any]], float]:
    """Two calls take the places (the client's deadline), then calls 2 and 3, with a 1 s
    deadline (the client's timeout is read at each call), wait: (the first two, the two
    waiting, when the waiting ones were made on the event loop's clock)."""
    calls = _Calls(client)
    first = await calls.places_taken(service)
    client.timeout = 1.0
    started = asyncio.get_running_loop().time()
    return first, await calls.waiting(range(2, 4)), started


async def test_a_deadline_that_passes_while_waiting_fails_the_call_unsent(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    with Client(address, timeout=10.0) as client:
        first, late, started = await _two_calls_of_one_second_behind_two(client, service)
        got = await _outcomes(late)
        took = asyncio.get_running_loop().time() - started
        service.open()
        await _outcomes(first)
        assert not thread_coalescer(client)._waiting
    assert all(isinstance(e, DeadlineExceeded) for e in got), got
    assert "waiting to be sent" in str(got[0])
    assert 0.9 < took < 1.7  # their own deadline, not one after
    assert [method for method, _ in _seen(service)] == ["EnqueueJob"] * MAX_IN_FLIGHT


async def test_a_deadline_that_passes_while_its_batch_is_on_its_way_ends_with_the_batch(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    with Client(address, timeout=10.0) as client:
        first, late, started = await _two_calls_of_one_second_behind_two(client, service)
        service.gate.set()  # the first two return: the two that wait leave, and are held
        got = await _outcomes(late)
        took = asyncio.get_running_loop().time() - started
        await _outcomes(first)
    assert _seen(service)[MAX_IN_FLIGHT:] == [("BatchEnqueueJobs", [2, 3])]
    # the batch's own deadline ended it, and with it each call
    assert all(isinstance(e, DeadlineExceeded) for e in got), got
    assert not any("waiting to be sent" in str(e) for e in got)
    assert 0.9 < took < 1.7


async def test_a_batch_carries_the_earliest_deadline_of_its_callers(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    with Client(address, timeout=5) as client:
        calls = _Calls(client)
        first = await calls.places_taken(service)
        early = await calls.waiting(range(10, 11))
        await asyncio.sleep(0.4)
        late = calls.start(11)
        await until(lambda: len(thread_coalescer(client)._waiting) == 2)
        service.open()
        await _outcomes([*first, *early, late])
    method, numbers, remaining = service.calls[-1]
    assert (method, numbers) == ("BatchEnqueueJobs", [10, 11])
    # the early caller's deadline: 5 s from its call, of which 0.4 s or more had passed
    assert remaining is not None and remaining < 4.7


async def test_calls_with_an_idempotency_key_go_alone(scripted: tuple[Scripted, str]) -> None:
    service, address = scripted
    with Client(address) as client:
        calls = _Calls(client)
        first = await calls.places_taken(service)
        keyed = [calls.start(n, idempotency_key=f"k{n}") for n in range(2, 5)]
        await until(lambda: len(service.calls) == MAX_IN_FLIGHT + 3)
        service.open()
        await _outcomes([*first, *keyed])
    assert [method for method, _ in _seen(service)] == ["EnqueueJob"] * (MAX_IN_FLIGHT + 3)
