"""AsyncClient's enqueue coalescing under cancellation, timeouts, closing and shutdown: each
caller sees what it would alone, and the coalescer comes back to rest (nothing on its way,
nothing waiting, no sender task left) ready for the next call."""

from __future__ import annotations

import asyncio
import gc
import random
from concurrent import futures
from typing import Any

import grpc
import pytest
from jobwheel.client import AsyncClient, InvalidArgument
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import job_service_pb2_grpc

from tests.conftest import Running
from tests.integration.client.scripted import (
    HeldReplies,
    Scripted,
    aio_coalescer,
    enqueue,
    places_taken,
    until,
)

WAIT = 5.0  # the longest any step may take before the test calls it a hang


async def _at_rest(client: AsyncClient) -> None:
    c = aio_coalescer(client)
    await until(lambda: c._sending == 0 and not c._senders)
    assert not c._waiting
    assert c._gathering is False


async def _outcomes(tasks: list[asyncio.Task[Any]]) -> list[Any]:
    return list(await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT))


@pytest.mark.parametrize("seed", range(3))
async def test_callers_cancelled_at_random_each_get_their_own(
    scripted: tuple[Scripted, str], seed: int
) -> None:
    """300 callers, a few of them refused, a quarter cancelled at random turns, answers
    after random delays: each caller gets its own job, its own error, or its cancellation."""
    service, address = scripted
    rng = random.Random(seed)
    service.bad = {n for n in range(300) if n % 37 == 5}
    service.jitter = random.Random(seed)
    service.open()
    async with AsyncClient(address, timeout=5) as client:
        tasks: list[asyncio.Task[Any]] = []
        cancel_at: dict[int, int] = {}  # caller -> the loop turn it is cancelled in
        for n in range(300):
            tasks.append(enqueue(client, n))
            if rng.random() < 0.25:
                cancel_at[n] = rng.randrange(0, 40)
            if rng.random() < 0.1:
                await asyncio.sleep(0)
        for turn in range(40):
            for n, at in cancel_at.items():
                if at == turn:
                    tasks[n].cancel()
            await asyncio.sleep(0 if turn % 3 else 0.001)
        got = await _outcomes(tasks)
        for n, outcome in enumerate(got):
            if isinstance(outcome, asyncio.CancelledError):
                assert n in cancel_at, n
            elif n in service.bad:
                assert isinstance(outcome, InvalidArgument), (n, outcome)
                assert f"jobs [{n}] are bad" in str(outcome), (n, outcome)
            else:
                assert isinstance(outcome, pb.EnqueueJobResponse), (n, outcome)
                assert outcome.job.id == f"job-{n}", (n, outcome)
        await until(lambda: service.active == 0)
        await _at_rest(client)
        assert (await client.enqueue_job("test.noop", payload={"n": 1000})).job.id == "job-1000"
        await _at_rest(client)


async def test_300_callers_one_refused_against_jobwheel_each_get_their_own(
    server: Running,
) -> None:
    """300 calls in one turn leave as one batch (the server's chunked path); one bad job
    refuses it, each call is then sent alone, and no job is created twice."""
    async with AsyncClient(server.address) as client:
        tasks = ["bad task!" if n == 280 else "test.noop" for n in range(300)]
        calls = [
            client.enqueue_job(task, payload={"n": n}, queue="q") for n, task in enumerate(tasks)
        ]
        got = await _outcomes([asyncio.create_task(call) for call in calls])
        assert isinstance(got[280], InvalidArgument)
        assert [v.field for v in got[280].violations] == ["task"]
        assert all(int(r.job.payload["n"]) == n for n, r in enumerate(got) if n != 280)
        stored = [job async for job in client.iter_jobs(queues=["q"])]
        assert sorted(int(j.payload["n"]) for j in stored) == [n for n in range(300) if n != 280]
        await _at_rest(client)


async def test_a_caller_cancelled_while_its_refused_batch_is_sent_again_alone_is_alone(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    service.bad = {3}
    async with AsyncClient(address) as client:
        tasks = [enqueue(client, n) for n in range(2, 6)]  # one batch; its calls alone held
        service.batch_gate.set()
        await until(lambda: len(service.calls) == 5)
        seen = service.seen()
        assert seen[0] == ("BatchEnqueueJobs", [2, 3, 4, 5])
        assert sorted(numbers[0] for _, numbers in seen[1:]) == [2, 3, 4, 5]
        tasks[2].cancel()  # n=4, while its own call is on its way
        await asyncio.sleep(0.02)
        service.gate.set()
        got = await _outcomes(tasks)
        assert got[0].job.id == "job-2"
        assert isinstance(got[1], InvalidArgument) and "jobs [3] are bad" in str(got[1])
        assert isinstance(got[2], asyncio.CancelledError)
        assert got[3].job.id == "job-5"
    await _at_rest(client)


async def test_a_caller_cancelled_after_its_batch_was_refused_is_not_sent_again(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    service.bad = {3}
    async with AsyncClient(address) as client:
        tasks = await places_taken(client, service)
        tasks += [enqueue(client, n) for n in range(2, 6)]
        service.gate.set()
        await until(lambda: [m for m, _ in service.seen()].count("BatchEnqueueJobs") == 1)
        tasks[4].cancel()  # n=4, after its batch left
        service.batch_gate.set()
        got = await _outcomes(tasks)
    assert isinstance(got[4], asyncio.CancelledError)
    assert isinstance(got[3], InvalidArgument)
    assert [got[n].job.id for n in (0, 1, 2, 5)] == ["job-0", "job-1", "job-2", "job-5"]
    alone = sorted(ns[0] for m, ns in service.seen() if m == "EnqueueJob" and ns[0] >= 2)
    assert alone == [2, 3, 5]
    await _at_rest(client)


@pytest.mark.parametrize("where", ["gathering", "waiting", "in_flight", "leader_alone"])
async def test_a_timeout_around_enqueue_job_is_that_callers_alone(
    scripted: tuple[Scripted, str], where: str
) -> None:
    service, address = scripted
    async with AsyncClient(address) as client:

        async def timed(n: int, after: float) -> Any:
            async with asyncio.timeout(after):
                return await client.enqueue_job("test.noop", payload={"n": n})

        if where == "gathering":  # the first call, waiting a turn for others to join it
            first = asyncio.create_task(timed(0, 0))
            others = [enqueue(client, n) for n in (1, 2)]
            service.open()
            got = await _outcomes([first, *others])
            assert isinstance(got[0], TimeoutError)
            assert [r.job.id for r in got[1:]] == ["job-1", "job-2"]
        elif where == "leader_alone":
            got = await _outcomes([asyncio.create_task(timed(0, 0.1))])
            assert isinstance(got[0], TimeoutError)
            service.open()
        else:
            places = await places_taken(client, service)
            mine = asyncio.create_task(timed(5, 0.2))
            others = [enqueue(client, n) for n in (6, 7)]
            if where == "in_flight":
                service.gate.set()
                await until(lambda: any(m == "BatchEnqueueJobs" for m, _ in service.seen()))
            got = await _outcomes([mine])
            assert isinstance(got[0], TimeoutError)
            service.open()
            rest = await _outcomes([*places, *others])
            assert [r.job.id for r in rest] == ["job-0", "job-1", "job-6", "job-7"]
            if where == "waiting":  # never sent
                assert all(5 not in numbers for _, numbers in service.seen())
        await _at_rest(client)


@pytest.mark.parametrize("coalesce", [True, False])
async def test_closing_the_client_ends_every_call_on_its_way_or_waiting(
    scripted: tuple[Scripted, str], coalesce: bool
) -> None:
    service, address = scripted
    client = AsyncClient(address, coalesce=coalesce)
    tasks = await places_taken(client, service)
    tasks += [enqueue(client, n) for n in range(2, 8)]
    await asyncio.sleep(0.02)
    await client.close()
    got = await _outcomes(tasks)
    assert not any(isinstance(g, pb.EnqueueJobResponse) for g in got), got
    after = await _outcomes([enqueue(client, 99)])
    assert isinstance(after[0], Exception), after
    if coalesce:
        await _at_rest(client)


async def test_closing_the_client_while_a_refused_batch_is_sent_again_ends_every_call(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    service.bad = {3}
    client = AsyncClient(address)
    tasks = [enqueue(client, n) for n in range(2, 6)]
    await until(lambda: len(service.calls) == 1)
    service.batch_gate.set()
    await until(lambda: len(service.calls) == 5)
    await client.close()
    got = await _outcomes(tasks)
    assert not any(isinstance(g, pb.EnqueueJobResponse) for g in got), got
    await _at_rest(client)


async def test_a_batch_refused_while_its_channel_closes_fails_only_its_own_callers(
    scripted: tuple[Scripted, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A batch refused while the channel closes gracefully (in-flight calls finish, new ones
    raise UsageError): each call sent again alone gets that error, and the sender task that
    sent them ends cleanly (no exception left unretrieved)."""
    service, address = scripted
    service.bad = {3}
    channel = grpc.aio.insecure_channel(address)
    client = AsyncClient(channel=channel)
    tasks = [enqueue(client, n) for n in range(2, 6)]
    await until(lambda: len(service.calls) == 1)
    closing = asyncio.create_task(channel.close(grace=3))
    await asyncio.sleep(0.05)  # closing: the batch may finish, no call may start
    service.batch_gate.set()
    got = await _outcomes(tasks)
    await asyncio.wait_for(closing, WAIT)
    assert all(isinstance(g, grpc.aio.UsageError) for g in got), got
    await _at_rest(client)
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_a_sender_cancelled_before_it_ran_leaves_the_client_usable(
    scripted: tuple[Scripted, str],
) -> None:
    """Every task cancelled in the turn after the callers' (as a shutdown handler that
    cancels all other tasks does), the batch's sender before its first step: its place comes
    back and a later call gets its job."""
    service, address = scripted
    service.open()
    async with AsyncClient(address) as client:
        c = aio_coalescer(client)
        tasks = [enqueue(client, n) for n in range(3)]

        async def cancel_every_task() -> None:
            await asyncio.sleep(0)  # in the turn the leader queues the batch and makes its sender
            assert c._senders
            for task in [*tasks, *c._senders]:
                task.cancel()

        await asyncio.wait_for(asyncio.create_task(cancel_every_task()), WAIT)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() for t in tasks)
        got = await asyncio.wait_for(client.enqueue_job("test.noop", payload={"n": 7}), 2)
        assert got.job.id == "job-7"
        await _at_rest(client)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_asyncio_run_returning_with_calls_everywhere_leaves_nothing_behind(
    turns: int, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.run returns (and cancels what is left) with calls on their way, waiting, and
    gathering: the coalescer is at rest and nothing is logged as lost."""
    service = HeldReplies()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    job_service_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    clients: list[AsyncClient] = []

    async def main() -> None:
        client = AsyncClient(f"127.0.0.1:{port}")
        clients.append(client)
        for n in range(2):
            enqueue(client, n)
            for _ in range(200):
                if len(service.calls) > n:
                    break
                await asyncio.sleep(0.005)
        for n in range(2, 8):
            enqueue(client, n)
        for _ in range(turns):
            await asyncio.sleep(0)

    try:
        asyncio.run(main())
    finally:
        service.open()
        server.stop(None)
    c = aio_coalescer(clients[0])
    assert (c._sending, len(c._waiting), c._gathering) == (0, 0, False)
    assert "never retrieved" not in caplog.text
    assert "destroyed but it is pending" not in caplog.text
