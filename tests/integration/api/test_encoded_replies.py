"""BatchEnqueueJobs hands its reply to grpc already encoded (api/encoded_reply.py): the bytes
a client gets are those the parsed reply serialized to; a batch naming stored idempotency
keys still answers the existing jobs; no other method's serializer changes."""

from __future__ import annotations

from google.protobuf import duration_pb2, struct_pb2
from jobwheel.server.api import encoded_reply
from jobwheel.server.api.job_service import JobService
from jobwheel.server.api.rpc_stack import RpcStack
from jobwheel.server.security.interceptor import Authenticator, Gate
from jobwheel.server.security.settings import SecuritySettings
from jobwheel.v1 import job_pb2, job_service_pb2_grpc, worker_service_pb2_grpc
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running

BATCH = "/jobwheel.v1.JobService/BatchEnqueueJobs"


def _payload(**fields: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


async def _raw_batch(server: Running, jobs: list[pb.EnqueueJobRequest]) -> bytes:
    call = server.channel.unary_unary(
        BATCH, request_serializer=pb.BatchEnqueueJobsRequest.SerializeToString
    )
    reply: bytes = await call(pb.BatchEnqueueJobsRequest(jobs=jobs))
    return reply


async def test_reply_bytes_are_the_parsed_replys_encoding(server: Running) -> None:
    # maps of one entry at most: larger ones have no one encoding (see the unit test)
    jobs = [
        pb.EnqueueJobRequest(task="t", payload=_payload(n=i), labels={"k": "v"}) for i in range(3)
    ]
    jobs.append(pb.EnqueueJobRequest(task="t", idempotency_key="fresh"))
    jobs.append(pb.EnqueueJobRequest(task="t", timeout=duration_pb2.Duration(seconds=5)))
    raw = await _raw_batch(server, jobs)
    reply = pb.BatchEnqueueJobsResponse.FromString(raw)
    assert reply.SerializeToString() == raw
    assert len(reply.results) == len(jobs)
    for result in reply.results:
        assert not result.already_exists
        stored = (await server.jobs.GetJob(pb.GetJobRequest(id=result.job.id))).job
        assert (result.job.task, result.job.payload, result.job.labels) == (
            stored.task,
            stored.payload,
            stored.labels,
        )


async def test_empty_batch_has_an_empty_reply(server: Running) -> None:
    assert await _raw_batch(server, []) == b""


async def test_batch_naming_stored_keys_answers_the_existing_jobs(server: Running) -> None:
    held = await server.jobs.EnqueueJob(
        pb.EnqueueJobRequest(task="t", idempotency_key="held", payload=_payload(x=1))
    )
    jobs = [
        pb.EnqueueJobRequest(task="t", payload=_payload(n=0)),
        pb.EnqueueJobRequest(task="other", idempotency_key="held"),
        pb.EnqueueJobRequest(task="t", idempotency_key="new"),
        pb.EnqueueJobRequest(task="t", idempotency_key="new"),
        pb.EnqueueJobRequest(task="t", payload=_payload(n=4)),
    ]
    reply = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=jobs))
    results = reply.results
    assert [r.already_exists for r in results] == [False, True, False, True, False]
    assert results[1].job == held.job  # the stored job, whole
    assert results[3].job.id == results[2].job.id
    assert len({r.job.id for r in results}) == 4
    assert [r.job.payload for r in (results[0], results[4])] == [_payload(n=0), _payload(n=4)]
    for r in results:
        assert (await server.jobs.GetJob(pb.GetJobRequest(id=r.job.id))).job.id == r.job.id


def test_only_batch_enqueue_passes_encoded_replies() -> None:
    gate = Gate(
        Authenticator(SecuritySettings()), protect_reflection=False, client_certificates=False
    )
    stack = RpcStack(None, gate)
    servicer = JobService.__new__(JobService)  # its methods, unbound to any core
    job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, stack.target)
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(
        worker_service_pb2_grpc.WorkerServiceServicer(), stack.target
    )
    given = stack.collector.handlers
    wrapped = stack.wrapped()
    changed = [
        m for m, h in given.items() if wrapped[m].response_serializer is not h.response_serializer
    ]
    assert changed == [BATCH]
    serialize = wrapped[BATCH].response_serializer
    message = pb.BatchEnqueueJobsResponse(
        results=[pb.EnqueueJobResponse(job=job_pb2.Job(id="a"), already_exists=True)]
    )
    assert serialize(message) == message.SerializeToString()
    data = message.SerializeToString()
    assert serialize(encoded_reply.EncodedReply(pb.BatchEnqueueJobsResponse, data, ["a"])) is data
