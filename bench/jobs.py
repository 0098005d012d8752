"""Client helpers shared by the scenarios: requests, listing, waiting for a drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

import grpc
from google.protobuf import struct_pb2
from jobwheel.v1 import job_pb2, job_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

UNHANDLED = "bench.stored_only"  # no handler anywhere: such jobs stay QUEUED
PENDING = (
    job_pb2.JOB_STATE_SCHEDULED,
    job_pb2.JOB_STATE_QUEUED,
    job_pb2.JOB_STATE_RUNNING,
    job_pb2.JOB_STATE_RETRYING,
)
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


def stub(ch: grpc.aio.Channel) -> job_service_pb2_grpc.JobServiceStub:
    return job_service_pb2_grpc.JobServiceStub(ch)


def request(task: str, n: int = 0) -> pb.EnqueueJobRequest:
    payload = struct_pb2.Struct()
    payload.update({"to": "ada@example.com", "n": n})
    return pb.EnqueueJobRequest(task=task, payload=payload)


def batch(task: str, size: int, start: int = 0) -> pb.BatchEnqueueJobsRequest:
    return pb.BatchEnqueueJobsRequest(jobs=[request(task, start + i) for i in range(size)])


async def enqueue_all(
    jobs: job_service_pb2_grpc.JobServiceStub, reqs: Iterable[pb.EnqueueJobRequest], per_call: int
) -> int:
    """BatchEnqueueJobs in calls of `per_call`; returns how many were created."""
    todo = list(reqs)
    created = 0
    for i in range(0, len(todo), per_call):
        reply = await jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=todo[i : i + per_call]))
        created += len(reply.results)
    return created


async def pending(jobs: job_service_pb2_grpc.JobServiceStub) -> bool:
    """True while any job is not yet terminal (one indexed lookup per state on the server)."""
    reply = await jobs.ListJobs(
        pb.ListJobsRequest(filter=job_pb2.JobFilter(states=PENDING), page_size=1)
    )
    return bool(reply.jobs)


# How often a drain's end is polled (seconds). The rate comes from the jobs' own times
# (drained_span), so the poll only tells when to read them; each poll costs the server a
# ListJobs (about 4.6 ms of CPU on a slow 2-core machine: 9% of its core at every 50 ms).
DRAIN_POLL = 0.2


async def wait_drained(
    jobs: job_service_pb2_grpc.JobServiceStub, every: float, within: float
) -> float:
    """Polls until no job is pending; returns the wall-clock time (time.time()) it saw that."""
    deadline = time.monotonic() + within
    while await pending(jobs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs still pending after {within:.0f} s")
        await asyncio.sleep(every)
    return time.time()


async def list_all(
    jobs: job_service_pb2_grpc.JobServiceStub, flt: job_pb2.JobFilter | None = None
) -> list[job_pb2.Job]:
    out: list[job_pb2.Job] = []
    token = ""
    while True:
        reply = await jobs.ListJobs(
            pb.ListJobsRequest(filter=flt, page_size=1000, page_token=token)
        )
        out.extend(reply.jobs)
        token = reply.next_page_token
        if not token:
            return out


def drained_span(done: Sequence[job_pb2.Job]) -> tuple[float, float]:
    """The first attempt's start and the last end among `done` (epoch seconds, the server's
    clock): the span the peers measure from their handlers' own start and finish."""
    starts = [j.start_time.ToMicroseconds() for j in done if j.HasField("start_time")]
    ends = [j.end_time.ToMicroseconds() for j in done if j.HasField("end_time")]
    return min(starts) / 1e6, max(ends) / 1e6
