"""Sends fuzzed requests to a server subprocess and checks every answer.

An answer passes when its status is one a client's request may earn (never UNKNOWN, INTERNAL
or UNAVAILABLE), an INVALID_ARGUMENT carries a BadRequest naming a field, and the status stays
small whatever the input (no echo of a megabyte id).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.v1 import job_service_pb2, worker_service_pb2

from tests.fuzz.messages import Pool

FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}
# A status larger than this would strain clients' metadata limits (8 KiB by default).
MAX_STATUS_BYTES = 4096
UNARY_TIMEOUT = 20.0  # generous on a loaded machine; a slow answer is reported, not allowed
LEASE_TIMEOUT = 2.0  # LeaseJobs long-polls up to the caller's deadline
STREAM_TIMEOUT = 0.3  # WatchJobs streams: read a little, then the deadline ends them
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_metadata_size", 1 << 20),  # so an oversized status shows as such
]


def methods() -> list[MethodDescriptor]:
    """Every RPC of both services."""
    out: list[MethodDescriptor] = []
    for file in (job_service_pb2.DESCRIPTOR, worker_service_pb2.DESCRIPTOR):
        for service in file.services_by_name.values():
            out.extend(service.methods)
    return out


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass
class Answer:
    code: grpc.StatusCode
    error: grpc.RpcError | None


class Fuzzer:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.counts: Counter[str] = Counter()
        self.slow: list[str] = []

    def close(self) -> None:
        self.channel.close()

    def send(self, method: MethodDescriptor, body: bytes) -> Answer:
        """One call with a raw body; the answer is counted and checked."""
        answer = self._call(method, body)
        self.counts[answer.code.name] += 1
        check(method, answer)
        return answer

    def _call(self, method: MethodDescriptor, body: bytes) -> Answer:
        out = message_factory.GetMessageClass(method.output_type).FromString
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(path(method), lambda b: b, out)(
                    body, timeout=STREAM_TIMEOUT
                )
                for n, _ in enumerate(stream):
                    if n >= 2:
                        stream.cancel()
                return Answer(grpc.StatusCode.OK, None)
            timeout = LEASE_TIMEOUT if method.name == "LeaseJobs" else UNARY_TIMEOUT
            self.channel.unary_unary(path(method), lambda b: b, out)(body, timeout=timeout)
            return Answer(grpc.StatusCode.OK, None)
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and not (
                method.server_streaming or method.name == "LeaseJobs"
            ):
                self.slow.append(method.name)
            return Answer(code, err)


def check(method: MethodDescriptor, answer: Answer) -> None:
    err = answer.error
    assert answer.code not in FORBIDDEN, (method.name, answer.code, err and err.details())  # type: ignore[attr-defined]
    if err is None or answer.code == grpc.StatusCode.CANCELLED:
        return
    trailing = err.trailing_metadata() or ()  # type: ignore[attr-defined]
    size = sum(len(k) + len(v) for k, v in trailing) + len(err.details() or "")  # type: ignore[attr-defined]
    assert size <= MAX_STATUS_BYTES, (method.name, answer.code, size)
    if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
        assert status is not None, (method.name, "INVALID_ARGUMENT without details")
        fields = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields += [v.field for v in bad.field_violations]
        assert fields, (method.name, "INVALID_ARGUMENT without a BadRequest", status.message)


def seed(address: str, pool: Pool) -> None:
    """A few real jobs (one-off, scheduled, cron, one leased) whose ids the fuzzer reuses."""
    from jobwheel.v1 import job_pb2, job_service_pb2_grpc, worker_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        later = job_pb2.Schedule()
        later.delay.FromSeconds(3600)
        requests = [
            job_service_pb2.EnqueueJobRequest(task="fuzz", queue="fuzz", labels={"k": "acme"}),
            job_service_pb2.EnqueueJobRequest(task="fuzz", schedule=later),
            job_service_pb2.EnqueueJobRequest(
                task="fuzz", schedule=job_pb2.Schedule(cron="0 0 1 1 *", time_zone="Asia/Tokyo")
            ),
            job_service_pb2.EnqueueJobRequest(task="lease.me", queue="fuzz.lease"),
        ]
        for request in requests:
            pool.ids.append(jobs.EnqueueJob(request).job.id)
        leased = workers.LeaseJobs(
            worker_service_pb2.LeaseJobsRequest(
                worker_id="fuzz-worker", queues=["fuzz.lease"], tasks=["lease.me"]
            )
        )
        assert leased.leases, "the seeded job was not leased"
        page = jobs.ListJobs(job_service_pb2.ListJobsRequest(page_size=1))
        pool.page_tokens.append(page.next_page_token)
        sub = jobs.CreateEventSubscription(
            job_service_pb2.CreateEventSubscriptionRequest(
                url="https://example.invalid/hook",
                event_types=[job_pb2.JOB_EVENT_TYPE_COMPLETED],
                secret="whsec_" + "MDEyMzQ1Njc4OWFiY2RlZg==",
            )
        )
        pool.ids.append(sub.subscription.id)


def every_job(address: str) -> Iterator[Message]:
    """All jobs, page by page: proves what the fuzzing stored can still be listed."""
    from jobwheel.v1 import job_service_pb2_grpc

    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        token = ""
        while True:
            page = jobs.ListJobs(
                job_service_pb2.ListJobsRequest(page_size=100, page_token=token), timeout=60
            )
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()[0] if value.split() else "0"
    return int(fields["VmRSS"]), int(fields["VmHWM"])


def settle(seconds: float) -> None:
    time.sleep(seconds)
