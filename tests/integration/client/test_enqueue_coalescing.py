"""AsyncClient's enqueue coalescing (jobwheel.client.coalescing): against a real server, and
against a scripted server that holds its replies until a test lets them go (scripted.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from jobwheel.client import AsyncClient, DeadlineExceeded, InvalidArgument, Unavailable
from jobwheel.client.calls import enqueue_request
from jobwheel.client.coalescing import MAX_BYTES, MAX_IN_FLIGHT, MAX_JOBS
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.client.scripted import (
    Scripted,
    aio_coalescer,
    enqueue,
    places_taken,
    until,
)
from tests.ports import refused_port


async def _outcomes(calls: list[Awaitable[pb.EnqueueJobResponse]]) -> list[Any]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


# -- against jobwheel -------------------------------------------------------------------------


async def test_concurrent_enqueues_share_calls_and_each_caller_gets_its_own_job(
    server: Running,
) -> None:
    async with AsyncClient(server.address) as client:
        coalescer = aio_coalescer(client)
        got = await asyncio.gather(
            *(client.enqueue_job("test.noop", payload={"n": n}, queue="q") for n in range(300))
        )
        assert [int(r.job.payload["n"]) for r in got] == list(range(300))
        assert len({r.job.id for r in got}) == 300
        assert not any(r.already_exists for r in got)
        assert coalescer.sent < 300 / 4  # a few calls carried them all
        stored = [job async for job in client.iter_jobs(queues=["q"])]
        assert sorted(int(job.payload["n"]) for job in stored) == list(range(300))
        # one caller at a time: one EnqueueJob each
        before = coalescer.sent
        for n in range(3):
            await client.enqueue_job("test.noop", payload={"n": n}, queue="lone")
        assert coalescer.sent == before + 3


async def test_a_refused_job_gets_its_own_error_and_the_others_are_created(
    server: Running,
) -> None:
    async with AsyncClient(server.address) as client:
        coalescer = aio_coalescer(client)
        calls = [
            client.enqueue_job("bad task!" if n == 6 else "test.noop", payload={"n": n})
            for n in range(10)
        ]
        got = await _outcomes(calls)
        error = got[6]
        assert isinstance(error, InvalidArgument)
        assert [v.field for v in error.violations] == ["task"]  # as for the call alone
        created = [r for n, r in enumerate(got) if n != 6]
        assert all(isinstance(r, pb.EnqueueJobResponse) for r in created)
        assert [int(r.job.payload["n"]) for r in created] == [n for n in range(10) if n != 6]
        # made in one turn of the event loop, they went together, were refused, and went
        # again one by one
        assert coalescer.sent == 1 + 10
        assert len([job async for job in client.iter_jobs()]) == 9


async def test_calls_with_an_idempotency_key_go_alone(server: Running) -> None:
    async with AsyncClient(server.address) as client:
        coalescer = aio_coalescer(client)
        got = await asyncio.gather(
            *(client.enqueue_job("test.noop", idempotency_key=f"k{n % 3}") for n in range(6))
        )
        assert coalescer.sent == 6
        assert len({r.job.id for r in got}) == 3
        assert sum(r.already_exists for r in got) == 3


async def test_without_coalescing_every_call_is_its_own(server: Running) -> None:
    async with AsyncClient(server.address, coalesce=False) as client:
        assert client._enqueues is False
        got = await asyncio.gather(*(client.enqueue_job("test.noop") for _ in range(20)))
        assert len({r.job.id for r in got}) == 20


async def test_an_unreachable_server_fails_every_caller() -> None:
    with refused_port() as port:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=5) as client:
            got = await asyncio.wait_for(
                _outcomes([client.enqueue_job("test.noop", payload={"n": n}) for n in range(8)]),
                10,
            )
    assert all(isinstance(e, Unavailable) for e in got), got


# -- against a scripted server ----------------------------------------------------------------


async def _five_with_two_out(
    client: AsyncClient, service: Scripted
) -> list[asyncio.Task[pb.EnqueueJobResponse]]:
    """Five calls, once the server holds the first MAX_IN_FLIGHT (the others wait)."""
    tasks = await places_taken(client, service)
    return tasks + [enqueue(client, n) for n in range(MAX_IN_FLIGHT, 5)]


async def test_callers_one_reply_wakes_leave_together_again(
    scripted: tuple[Scripted, str], answering: str
) -> None:
    service, _ = scripted
    async with AsyncClient(answering) as client:

        async def caller(n: int) -> None:
            for round_ in range(3):  # each enqueues again as soon as its job is created
                await client.enqueue_job("test.noop", payload={"n": 10 * round_ + n})

        await asyncio.gather(*(caller(n) for n in range(8)))
        await client.enqueue_job("test.noop", payload={"n": 99})
    # every round one call, none of a lone job split off ahead of the others; then a lone
    # call as EnqueueJob
    assert [(method, sorted(numbers)) for method, numbers, _ in service.calls] == [
        *(("BatchEnqueueJobs", [10 * round_ + n for n in range(8)]) for round_ in range(3)),
        ("EnqueueJob", [99]),
    ]


async def test_a_first_caller_cancelled_while_others_join_it_leaves_them_to_go(
    scripted: tuple[Scripted, str], answering: str
) -> None:
    service, _ = scripted
    async with AsyncClient(answering) as client:
        tasks = [enqueue(client, n) for n in range(3)]
        await asyncio.sleep(0)  # the first waits a turn for the others, which join it
        tasks[0].cancel()
        got = await asyncio.wait_for(_outcomes(tasks), 5)
    assert isinstance(got[0], asyncio.CancelledError)
    assert [r.job.id for r in got[1:]] == ["job-1", "job-2"]
    assert [(method, numbers) for method, numbers, _ in service.calls] == [
        ("BatchEnqueueJobs", [1, 2])
    ]


async def test_a_caller_cancelled_while_waiting_is_left_out(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    async with AsyncClient(address) as client:
        tasks = await _five_with_two_out(client, service)
        tasks[3].cancel()
        service.open()
        got = await _outcomes(tasks)
    assert isinstance(got[3], asyncio.CancelledError)
    assert [r.job.id for n, r in enumerate(got) if n != 3] == ["job-0", "job-1", "job-2", "job-4"]
    seen = [(method, numbers) for method, numbers, _ in service.calls]
    assert sorted(seen[:MAX_IN_FLIGHT]) == [("EnqueueJob", [0]), ("EnqueueJob", [1])]
    assert seen[MAX_IN_FLIGHT:] == [("BatchEnqueueJobs", [2, 4])]


async def test_a_caller_cancelled_after_its_batch_left_leaves_the_others_be(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    async with AsyncClient(address) as client:
        tasks = await _five_with_two_out(client, service)
        service.gate.set()
        await until(lambda: len(service.calls) == MAX_IN_FLIGHT + 1)
        tasks[3].cancel()
        await asyncio.sleep(0.05)
        service.batch_gate.set()
        got = await _outcomes(tasks)
    assert [(method, numbers) for method, numbers, _ in service.calls][-1] == (
        "BatchEnqueueJobs",
        [2, 3, 4],
    )
    # the cancellation reached only its own caller: the batch had been sent
    assert isinstance(got[3], asyncio.CancelledError)
    assert [r.job.id for n, r in enumerate(got) if n != 3] == ["job-0", "job-1", "job-2", "job-4"]


async def test_a_batch_carries_the_earliest_deadline_of_its_callers(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    async with AsyncClient(address, timeout=5) as client:
        first = await places_taken(client, service)
        early = enqueue(client, 10)
        await asyncio.sleep(0.4)
        late = enqueue(client, 11)
        await asyncio.sleep(0.1)
        service.open()
        await asyncio.gather(*first, early, late)
    method, numbers, remaining = service.calls[-1]
    assert (method, numbers) == ("BatchEnqueueJobs", [10, 11])
    # the early caller's deadline: 5 s from its call, of which 0.5 s had passed
    assert remaining is not None and remaining < 4.75


async def test_a_deadline_that_passes_while_waiting_fails_the_call(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    async with AsyncClient(address, timeout=1.0) as client:
        started = asyncio.get_running_loop().time()
        first = await places_taken(client, service)
        got = await _outcomes([*first, *(enqueue(client, n) for n in range(2, 4))])
        took = asyncio.get_running_loop().time() - started
    assert all(isinstance(e, DeadlineExceeded) for e in got), got
    # the waiting calls ended with the deadline they had from their start, not one after
    assert took < 1.7
    assert [method for method, _, _ in service.calls][:MAX_IN_FLIGHT] == ["EnqueueJob"] * 2


async def test_a_failed_batch_fails_each_of_its_callers(
    scripted: tuple[Scripted, str],
) -> None:
    service, address = scripted
    service.batch_status = grpc.StatusCode.UNAVAILABLE
    async with AsyncClient(address) as client:
        tasks = await _five_with_two_out(client, service)
        service.open()
        got = await _outcomes(tasks)
    assert [r.job.id for r in got[:MAX_IN_FLIGHT]] == ["job-0", "job-1"]
    assert all(isinstance(e, Unavailable) for e in got[MAX_IN_FLIGHT:]), got
    # not sent again: as for one call, the jobs may have been created
    assert [method for method, _, _ in service.calls].count("BatchEnqueueJobs") == 1


async def test_a_batch_holds_at_most_max_jobs(scripted: tuple[Scripted, str]) -> None:
    service, address = scripted
    async with AsyncClient(address) as client:
        first = await places_taken(client, service)
        waiting = [enqueue(client, MAX_IN_FLIGHT + n) for n in range(MAX_JOBS + 1)]
        await asyncio.sleep(0)
        service.open()
        got = await asyncio.gather(*first, *waiting)
    assert [r.job.id for r in got] == [f"job-{n}" for n in range(MAX_IN_FLIGHT + MAX_JOBS + 1)]
    later = sorted(service.calls[MAX_IN_FLIGHT:], key=lambda call: -len(call[1]))
    # the oldest MAX_JOBS together; the one past the limit in a call of its own
    assert [(method, numbers) for method, numbers, _ in later] == [
        ("BatchEnqueueJobs", list(range(MAX_IN_FLIGHT, MAX_IN_FLIGHT + MAX_JOBS))),
        ("EnqueueJob", [MAX_IN_FLIGHT + MAX_JOBS]),
    ]


def _payload_of_size(n: int, size: int) -> dict[str, Any]:
    """A payload whose EnqueueJobRequest (as the client builds it) is `size` bytes."""
    pad = size
    while (
        got := enqueue_request("test.noop", payload={"n": n, "pad": "x" * pad}).ByteSize()
    ) > size:
        pad -= got - size
    assert got == size  # a length prefix that shrank at a varint boundary would undershoot
    return {"n": n, "pad": "x" * pad}


@pytest.mark.parametrize(("past", "together"), [(0, 4), (1, 3)])
async def test_a_batch_holds_at_most_max_bytes(
    scripted: tuple[Scripted, str], past: int, together: int
) -> None:
    service, address = scripted
    quarter = MAX_BYTES // 4
    # four requests that come to MAX_BYTES exactly (past=0), or to one byte more (past=1)
    sizes = [quarter, quarter, quarter, quarter + past]
    async with AsyncClient(address) as client:
        first = await places_taken(client, service)
        waiting = [
            asyncio.create_task(
                client.enqueue_job("test.noop", payload=_payload_of_size(MAX_IN_FLIGHT + i, size))
            )
            for i, size in enumerate(sizes)
        ]
        await asyncio.sleep(0)
        service.open()
        await asyncio.gather(*first, *waiting)
    later = sorted(service.calls[MAX_IN_FLIGHT:], key=lambda call: -len(call[1]))
    numbers = list(range(MAX_IN_FLIGHT, MAX_IN_FLIGHT + 4))
    expected = [("BatchEnqueueJobs", numbers[:together])]
    if together < 4:
        expected.append(("EnqueueJob", numbers[together:]))
    assert [(method, n) for method, n, _ in later] == expected


with contextlib.suppress(ImportError):  # the otel extra is in the dev install
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    async def test_calls_inside_a_span_go_alone(scripted: tuple[Scripted, str]) -> None:
        service, address = scripted
        tracer = TracerProvider().get_tracer("test")
        async with AsyncClient(address) as client:
            with trace.use_span(tracer.start_span("request"), end_on_exit=True):
                tasks = [enqueue(client, n) for n in range(4)]
            await until(lambda: len(service.calls) == 4)
            service.open()
            await asyncio.gather(*tasks)
        assert [method for method, _, _ in service.calls] == ["EnqueueJob"] * 4
