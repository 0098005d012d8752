"""ListJobs: filters, pagination, stability while jobs arrive."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.api.helpers import field_violations


async def enqueue(server: Running, n: int, **kw: object) -> list[job_pb2.Job]:
    reqs = [pb.EnqueueJobRequest(**kw) for _ in range(n)]  # type: ignore[arg-type]
    resp = await server.jobs.BatchEnqueueJobs(pb.BatchEnqueueJobsRequest(jobs=reqs))
    return [r.job for r in resp.results]


async def all_pages(server: Running, req: pb.ListJobsRequest) -> list[job_pb2.Job]:
    out: list[job_pb2.Job] = []
    while True:
        resp = await server.jobs.ListJobs(req)
        out.extend(resp.jobs)
        if not resp.next_page_token:
            return out
        req.page_token = resp.next_page_token


async def test_filters(server: Running) -> None:
    p = struct_pb2.Struct()
    p.update({"customer": "acme", "tier": 2})
    a = await enqueue(server, 2, task="email", queue="mail", labels={"env": "prd"}, payload=p)
    b = await enqueue(server, 3, task="report", labels={"env": "dev"})

    async def ids(flt: job_pb2.JobFilter) -> set[str]:
        return {j.id for j in await all_pages(server, pb.ListJobsRequest(filter=flt))}

    assert await ids(job_pb2.JobFilter(tasks=["email"])) == {j.id for j in a}
    assert await ids(job_pb2.JobFilter(queues=["default"])) == {j.id for j in b}
    assert await ids(job_pb2.JobFilter(labels={"env": "dev"})) == {j.id for j in b}
    q = struct_pb2.Struct()
    q.update({"customer": "acme"})
    assert await ids(job_pb2.JobFilter(payload=q)) == {j.id for j in a}
    q.update({"tier": 3})
    assert await ids(job_pb2.JobFilter(payload=q)) == set()
    assert await ids(job_pb2.JobFilter(ids=[a[0].id, b[0].id])) == {a[0].id, b[0].id}
    assert await ids(job_pb2.JobFilter(states=[job_pb2.JOB_STATE_SCHEDULED])) == set()
    assert len(await ids(job_pb2.JobFilter(states=[job_pb2.JOB_STATE_QUEUED]))) == 5
    assert await ids(job_pb2.JobFilter(recurring=True)) == set()
    assert len(await ids(job_pb2.JobFilter(recurring=False))) == 5


async def test_pagination_is_stable_while_jobs_arrive(server: Running) -> None:
    first = await enqueue(server, 25, task="t")
    for order in (pb.JOB_ORDER_CREATE_TIME_DESC, pb.JOB_ORDER_CREATE_TIME_ASC):
        req = pb.ListJobsRequest(page_size=7, order=order)
        seen: list[str] = []
        while True:
            resp = await server.jobs.ListJobs(req)
            assert len(resp.jobs) <= 7
            seen.extend(j.id for j in resp.jobs)
            await enqueue(server, 3, task="t")  # arrivals between pages
            if not resp.next_page_token:
                break
            req.page_token = resp.next_page_token
        assert len(seen) == len(set(seen))
        assert {j.id for j in first} <= set(seen)
    ordered = [j.id for j in await all_pages(server, pb.ListJobsRequest())]
    assert ordered == sorted(ordered, reverse=True)  # UUIDv7 ids sort by creation


async def test_page_size_rules(server: Running) -> None:
    await enqueue(server, 3, task="t")
    assert len((await server.jobs.ListJobs(pb.ListJobsRequest(page_size=0))).jobs) == 3
    assert len((await server.jobs.ListJobs(pb.ListJobsRequest(page_size=10**6))).jobs) == 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.ListJobs(pb.ListJobsRequest(page_size=-1))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in field_violations(info.value)


@pytest.mark.parametrize("token", ["garbage!!", "eyJrIjoiYSJ9", "e30"])
async def test_malformed_page_tokens(server: Running, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.ListJobs(pb.ListJobsRequest(page_token=token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(info.value)


async def test_token_from_another_filter_is_refused(server: Running) -> None:
    await enqueue(server, 3, task="t")
    resp = await server.jobs.ListJobs(pb.ListJobsRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.ListJobs(
            pb.ListJobsRequest(
                page_size=1,
                page_token=resp.next_page_token,
                filter=job_pb2.JobFilter(tasks=["other"]),
            )
        )
    assert "page_token" in field_violations(info.value)


async def test_malformed_filter(server: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await server.jobs.ListJobs(
            pb.ListJobsRequest(
                filter=job_pb2.JobFilter(states=[job_pb2.JOB_STATE_UNSPECIFIED], queues=["bad q"])
            )
        )
    violations = field_violations(info.value)
    assert "filter.states[0]" in violations and "filter.queues[0]" in violations
