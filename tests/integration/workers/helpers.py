"""Calls of the worker tests: enqueue, lease, decode errors."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(value * 1e9))
    return d


def struct(**fields: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


async def enqueue(server: Running, task: str = "remote.work", **kw: Any) -> job_pb2.Job:
    if "payload" in kw and isinstance(kw["payload"], dict):
        kw["payload"] = struct(**kw["payload"])
    return (await server.jobs.EnqueueJob(jpb.EnqueueJobRequest(task=task, **kw))).job


async def lease(
    server: Running, worker_id: str = "w1", wait: float = 0.0, lease: float = 30.0, **kw: Any
) -> list[wpb.Lease]:
    request = wpb.LeaseJobsRequest(
        worker_id=worker_id, wait=seconds(wait), lease_duration=seconds(lease), **kw
    )
    return list((await server.workers.LeaseJobs(request)).leases)


async def attempts(server: Running, job_id: str) -> list[job_pb2.Attempt]:
    resp = await server.jobs.ListJobAttempts(jpb.ListJobAttemptsRequest(job_id=job_id))
    return list(resp.attempts)


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "no rich status attached"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo detail")


def value(**fields: object) -> struct_pb2.Value:
    """A JSON object as a google.protobuf.Value (a result)."""
    v = struct_pb2.Value()
    v.struct_value.update(fields)
    return v


async def get(server: Running, job_id: str) -> job_pb2.Job:
    return (await server.jobs.GetJob(jpb.GetJobRequest(id=job_id))).job
