"""Numbers, strings and structure: each limit, one past it, and garbage (proto: JobService)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import struct_pb2
from jobwheel.v1 import job_pb2, worker_service_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.api.limits_helpers import (
    INVALID,
    NOT_FOUND,
    OK,
    Row,
    check_rows,
    doc,
    nested,
)
from tests.integration.fuzz.messages import varint

Call = Callable[[], Awaitable[Any]]
UNKNOWN_ID = "01234567-89ab-7def-8123-456789abcdef"
NAN, INF = float("nan"), float("inf")
PAYLOAD_64 = {f"k{i}": i for i in range(64)}


def enqueue(server: Running, **fields: Any) -> Call:
    fields.setdefault("task", "t")
    return lambda: server.jobs.EnqueueJob(pb.EnqueueJobRequest(**fields))


def listing(server: Running, **fields: Any) -> Call:
    return lambda: server.jobs.ListJobs(pb.ListJobsRequest(filter=job_pb2.JobFilter(**fields)))


def value(data: Any) -> struct_pb2.Value:
    out = struct_pb2.Value()
    if isinstance(data, float):
        out.number_value = data
    else:
        out.struct_value.update(data)
    return out


async def test_numbers(server: Running) -> None:
    complete = lambda v: server.workers.CompleteJob(  # noqa: E731
        worker_service_pb2.CompleteJobRequest(job_id=UNKNOWN_ID, epoch=1, worker_id="w", result=v)
    )
    beat = lambda p: server.workers.HeartbeatJob(  # noqa: E731
        worker_service_pb2.HeartbeatJobRequest(
            job_id=UNKNOWN_ID, epoch=1, worker_id="w", progress=p
        )
    )
    queue = lambda r: server.jobs.UpdateQueue(  # noqa: E731
        pb.UpdateQueueRequest(name="q", max_dispatches_per_second=r)
    )
    await check_rows(
        [
            Row(
                "a payload with big finite numbers",
                enqueue(server, payload=doc({"n": 1e308, "i": 2.0**64})),
                OK,
            ),
            Row("NaN in a payload", enqueue(server, payload=doc({"n": NAN})), INVALID, "payload"),
            Row(
                "Infinity in a nested payload",
                enqueue(server, payload=doc({"a": [{"n": -INF}]})),
                INVALID,
                "payload",
            ),
            Row("a finite result", lambda: complete(value(1e308)), NOT_FOUND),
            Row("NaN as a result", lambda: complete(value(NAN)), INVALID, "result"),
            Row("Infinity in progress", lambda: beat(doc({"p": INF})), INVALID, "progress"),
            Row("a filter value of 2^64", listing(server, payload=doc({"n": 2.0**64})), OK),
            Row(
                "NaN as a filter value",
                listing(server, payload=doc({"n": NAN})),
                INVALID,
                "filter.payload",
            ),
            Row("rate of a million", lambda: queue(1e6), OK),
            Row("rate past it", lambda: queue(1e6 + 1), INVALID, "max_dispatches_per_second"),
            Row("NaN rate", lambda: queue(NAN), INVALID, "max_dispatches_per_second"),
            Row(
                "NaN multiplier",
                enqueue(server, retry_policy=job_pb2.RetryPolicy(multiplier=NAN)),
                INVALID,
                "retry_policy.multiplier",
            ),
        ]
    )
    # a number beyond 64 bits is stored and found again on both backends
    job = (
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t", payload=doc({"big": 2.0**70})))
    ).job
    found = await server.jobs.ListJobs(
        pb.ListJobsRequest(filter=job_pb2.JobFilter(payload=doc({"big": 2.0**70})))
    )
    assert [j.id for j in found.jobs] == [job.id]


async def test_strings(server: Running) -> None:
    nul = "acme\x00x"

    def worker(worker_id: str) -> Any:
        request = worker_service_pb2.LeaseJobsRequest(worker_id=worker_id, queues=["none"])
        return server.workers.LeaseJobs(request)

    def zone(name: str) -> Call:
        return enqueue(server, schedule=job_pb2.Schedule(cron="0 0 * * *", time_zone=name))

    await check_rows(
        [
            Row(
                "an id of 64 characters",
                lambda: server.jobs.GetJob(pb.GetJobRequest(id="i" * 64)),
                NOT_FOUND,
            ),
            Row(
                "an id of 65",
                lambda: server.jobs.GetJob(pb.GetJobRequest(id="i" * 65)),
                INVALID,
                "id",
            ),
            Row(
                "a 1 MB id",
                lambda: server.jobs.GetJob(pb.GetJobRequest(id="i" * 1_000_000)),
                INVALID,
                "id",
            ),
            Row(
                "U+0000 in an id",
                lambda: server.jobs.CancelJob(pb.CancelJobRequest(id=nul)),
                INVALID,
                "id",
            ),
            Row("U+0000 in a label", enqueue(server, labels={"k": nul}), INVALID, "labels[k]"),
            Row(
                "a newline in a label", enqueue(server, labels={"k": "a\nb"}), INVALID, "labels[k]"
            ),
            Row("a label of 256 characters", enqueue(server, labels={"k": "v" * 256}), OK),
            Row("a label of 257", enqueue(server, labels={"k": "v" * 257}), INVALID, "labels[k]"),
            Row("U+0000 in a task", enqueue(server, task=nul), INVALID, "task"),
            Row("U+0000 in a queue", enqueue(server, queue=nul), INVALID, "queue"),
            Row("an idempotency key of 255", enqueue(server, idempotency_key="k" * 255), OK),
            Row(
                "an idempotency key of 256",
                enqueue(server, idempotency_key="k" * 256),
                INVALID,
                "idempotency_key",
            ),
            Row(
                "U+0000 in an idempotency key",
                enqueue(server, idempotency_key=nul),
                INVALID,
                "idempotency_key",
            ),
            Row(
                "U+0000 in a payload string",
                enqueue(server, payload=doc({"s": nul})),
                INVALID,
                "payload",
            ),
            Row(
                "U+0000 in a payload key",
                enqueue(server, payload=doc({nul: 1})),
                INVALID,
                "payload",
            ),
            Row(
                "U+0000 in a filter label",
                listing(server, labels={"k": nul}),
                INVALID,
                "filter.labels[k]",
            ),
            Row("U+0000 in a filter id", listing(server, ids=[nul]), INVALID, "filter.ids[0]"),
            Row(
                "U+0000 in a filter task", listing(server, tasks=[nul]), INVALID, "filter.tasks[0]"
            ),
            Row("64 filter payload fields", listing(server, payload=doc(PAYLOAD_64)), OK),
            Row(
                "65",
                listing(server, payload=doc({**PAYLOAD_64, "z": 1})),
                INVALID,
                "filter.payload",
            ),
            Row("1000 filter ids", listing(server, ids=["i"] * 1000), OK),
            Row("1001 filter ids", listing(server, ids=["i"] * 1001), INVALID, "filter.ids"),
            Row(
                "U+0000 in a reason",
                lambda: server.jobs.CancelJob(pb.CancelJobRequest(id=UNKNOWN_ID, reason=nul)),
                INVALID,
                "reason",
            ),
            Row(
                "a tab in a reason",
                lambda: server.jobs.CancelJob(pb.CancelJobRequest(id=UNKNOWN_ID, reason="a\tb")),
                NOT_FOUND,
            ),
            Row("U+0000 in a worker id", lambda: worker(nul), INVALID, "worker_id"),
            Row("a worker id of 255", lambda: worker("w" * 255), OK),
            Row("a worker id of 256", lambda: worker("w" * 256), INVALID, "worker_id"),
            Row("a zone", zone("America/New_York"), OK),
            Row("a zone folder", zone("America"), INVALID, "schedule.time_zone"),
            Row("another folder", zone("Etc"), INVALID, "schedule.time_zone"),
            Row("the host's zone", zone("localtime"), INVALID, "schedule.time_zone"),
            Row("a zone of 300 characters", zone("A" * 300), INVALID, "schedule.time_zone"),
            Row(
                "a cron of 300 characters",
                enqueue(server, schedule=job_pb2.Schedule(cron="*" * 300)),
                INVALID,
                "schedule.cron",
            ),
        ]
    )


async def test_a_label_filter_matches_whole_values_only(server: Running) -> None:
    wanted = (
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t", labels={"c": "acme"}))
    ).job
    await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t", labels={"c": "acme x"}))
    flt = job_pb2.JobFilter(labels={"c": "acme"})
    assert (await server.jobs.CancelJobs(pb.CancelJobsRequest(filter=flt))).count == 1
    got = await server.jobs.GetJob(pb.GetJobRequest(id=wanted.id))
    assert got.job.state == job_pb2.JOB_STATE_CANCELLED


async def test_json_depth(server: Running) -> None:
    # the deepest payload accepted still comes back to a Python client in every reply,
    # a WatchJobs batch included (protobuf's limit of 100 nested messages)
    raw_enqueue = server.channel.unary_unary(
        "/jobwheel.v1.JobService/EnqueueJob",
        request_serializer=lambda body: body,
        response_deserializer=pb.EnqueueJobResponse.FromString,
    )
    deepest = doc(nested(20))
    job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t", payload=deepest))).job
    assert job.payload == deepest
    assert (await server.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.payload == deepest
    watch = server.jobs.WatchJobs(pb.WatchJobsRequest(include_snapshot=True, max_batch=10))
    first = await watch.read()
    watch.cancel()
    assert isinstance(first, pb.WatchJobsResponse)
    await check_rows(
        [
            Row("21 levels", enqueue(server, payload=doc(nested(21))), INVALID, "payload"),
            Row("30 levels", enqueue(server, payload=doc(nested(30))), INVALID, "payload"),
            Row(
                "21 levels in a filter",
                listing(server, payload=doc(nested(21))),
                INVALID,
                "filter.payload",
            ),
            # deeper than the server's parser goes: the body itself is refused
            Row("200 levels", lambda: raw_enqueue(deep_struct(200)), INVALID, "request"),
        ]
    )


def deep_struct(levels: int) -> bytes:
    """An EnqueueJobRequest body whose payload nests `levels` objects: built by hand, as
    this process's protobuf refuses to build one so deep."""
    value = b"\x11" + struct.pack("<d", 1.0)  # Value.number_value
    for _ in range(levels):
        entry = b"\x0a\x01a\x12" + varint(len(value)) + value  # map entry "a" -> value
        body = b"\x0a" + varint(len(entry)) + entry  # Struct.fields
        value = b"\x2a" + varint(len(body)) + body  # Value.struct_value
    return b"\x12\x01t\x1a" + varint(len(body)) + body  # task "t", payload


def _token(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_page_tokens(server: Running) -> None:
    for _ in range(3):
        await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="t"))
    page = await server.jobs.ListJobs(pb.ListJobsRequest(page_size=1))
    assert page.next_page_token
    lists = lambda t: server.jobs.ListJobs(pb.ListJobsRequest(page_size=1, page_token=t))  # noqa: E731
    attempts = lambda t: server.jobs.ListJobAttempts(  # noqa: E731
        pb.ListJobAttemptsRequest(job_id=UNKNOWN_ID, page_token=t)
    )
    digest = json.loads(base64.urlsafe_b64decode(page.next_page_token + "=="))["s"]
    await check_rows(
        [
            Row("the real token", lambda: lists(page.next_page_token), OK),
            Row("garbage", lambda: lists("!!!"), INVALID, "page_token"),
            Row(
                "a key of 2^70",
                lambda: lists(_token({"k": 2**70, "s": digest})),
                INVALID,
                "page_token",
            ),
            Row(
                "a negative key",
                lambda: lists(_token({"k": -1, "s": digest})),
                INVALID,
                "page_token",
            ),
            Row(
                "nested 100,000 deep", lambda: lists(_token(b"[" * 100_000)), INVALID, "page_token"
            ),
            Row("a token of 300 characters", lambda: lists("A" * 300), INVALID, "page_token"),
            Row(
                "another request's token",
                lambda: attempts(page.next_page_token),
                INVALID,
                "page_token",
            ),
        ]
    )


async def test_status_stays_small_for_a_batch_of_bad_jobs(server: Running) -> None:
    jobs = [pb.EnqueueJobRequest(task="", queue="x" * 1000) for _ in range(3000)]  # < 4 MiB
    try:
        await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=jobs))
    except grpc.aio.AioRpcError as err:
        assert err.code() == INVALID
        assert len(err.details() or "") < 4000
        assert "more" in (err.details() or "")
    else:
        raise AssertionError("a batch of invalid jobs was accepted")
