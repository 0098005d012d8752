"""ListWorkers, `jobwheel workers`, and Job.waiting_reason."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import duration_pb2
from jobwheel.server import model
from jobwheel.server.execution import roster as roster_module
from jobwheel.server.execution.roster import FORGET_AFTER, NO_WORKER_AFTER
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running, fresh_pg_schema, running_server
from tests.integration.api.helpers import field_violations
from tests.integration.client.test_cli import jw


def by_id(workers: list[pb.Worker]) -> dict[str, pb.Worker]:
    return {w.id: w for w in workers}


async def test_list_workers_after_a_worker_leases(server: Running) -> None:
    job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.a", queue="q1"))).job
    leased = await server.workers.LeaseJobs(
        wpb.LeaseJobsRequest(worker_id="w-1", queues=["q1"], tasks=["remote.a"], max_jobs=5)
    )
    assert [lease.job.id for lease in leased.leases] == [job.id]
    await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w-2"))  # any task

    reply = await server.jobs.ListWorkers(pb.ListWorkersRequest())
    kinds = [w.kind for w in reply.workers]
    assert kinds == [pb.WORKER_KIND_SERVER, pb.WORKER_KIND_REMOTE, pb.WORKER_KIND_REMOTE]
    workers = by_id(list(reply.workers))
    roster = server.app.roster
    assert roster is not None
    me = workers[roster.server_id]
    assert "test.echo" in me.tasks and "jobwheel.event_delivery" not in me.tasks
    assert me.version and me.jobs_held == 0
    w1 = workers["w-1"]
    assert (list(w1.queues), list(w1.tasks), w1.jobs_held) == (["q1"], ["remote.a"], 1)
    assert w1.seen_by == roster.server_id and w1.last_seen_time.seconds > 0
    assert (list(workers["w-2"].tasks), workers["w-2"].jobs_held) == ([], 0)

    # after its report the worker holds nothing; a heartbeat-free worker ages out of the list
    [lease] = leased.leases
    await server.workers.CompleteJob(
        wpb.CompleteJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w-1")
    )
    await roster.flush()
    reply = await server.jobs.ListWorkers(pb.ListWorkersRequest())
    assert by_id(list(reply.workers))["w-1"].jobs_held == 0
    recent = await server.jobs.ListWorkers(
        pb.ListWorkersRequest(seen_within=duration_pb2.Duration(nanos=1000))
    )
    assert [w.kind for w in recent.workers] == [pb.WORKER_KIND_SERVER]


async def test_seen_within_limits(server: Running) -> None:
    week = FORGET_AFTER // model.SECOND
    await server.jobs.ListWorkers(
        pb.ListWorkersRequest(seen_within=duration_pb2.Duration(seconds=week))
    )
    for bad in (
        duration_pb2.Duration(seconds=week + 1),
        duration_pb2.Duration(seconds=-1),
        duration_pb2.Duration(seconds=1, nanos=-1),  # malformed
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.jobs.ListWorkers(pb.ListWorkersRequest(seen_within=bad))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "seen_within" in field_violations(err.value)


async def test_replicas_share_their_workers() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a:
        assert a.app.roster is not None
        async with running_server(url) as b:
            assert b.app.roster is not None
            await a.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w-a", queues=["qa"]))
            await a.app.roster.flush()
            await b.app.roster.flush()
            for replica in (a, b):
                reply = await replica.jobs.ListWorkers(pb.ListWorkersRequest())
                workers = by_id(list(reply.workers))
                assert {a.app.roster.server_id, b.app.roster.server_id, "w-a"} <= set(workers)
                assert workers["w-a"].seen_by == a.app.roster.server_id
            gone = b.app.roster.server_id
        # a replica that stopped is no longer listed
        reply = await a.jobs.ListWorkers(pb.ListWorkersRequest())
        assert gone not in by_id(list(reply.workers))


async def test_queued_job_nobody_asked_for_says_so(server: Running) -> None:
    roster = server.app.roster
    assert roster is not None
    job = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody.runs"))).job
    served = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.hang"))).job

    async def reason(job_id: str) -> str:
        return (await server.jobs.GetJob(pb.GetJobRequest(id=job_id))).job.waiting_reason

    assert await reason(job.id) == ""  # the server just started: workers may come
    roster.started -= NO_WORKER_AFTER
    text = await reason(job.id)
    assert text.startswith("no worker:") and "'nobody.runs'" in text
    listed = await server.jobs.ListJobs(pb.ListJobsRequest())
    assert {j.id: j.waiting_reason for j in listed.jobs}[job.id] == text
    assert await reason(served.id) == ""  # an in-process handler runs it

    shown = await jw(server.address, "get", job.id)
    assert shown.code == 0 and "no worker:" in shown.out
    waited = await jw(server.address, "wait", job.id, "--timeout", "1s")
    assert waited.code == 1 and f"{job.id}: QUEUED: {text}" in waited.err

    # a worker of another queue does not help; one that asks for any task does
    await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w-x", queues=["other"]))
    assert await reason(job.id) == text
    await server.workers.LeaseJobs(
        wpb.LeaseJobsRequest(worker_id="w-y", tasks=["nobody.else"], max_jobs=1)
    )
    assert await reason(job.id) == text
    await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="w-z", queues=["default"]))
    # it leased the job itself; a new one waits for w-z, which asked within the minute
    later = (await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="nobody.runs"))).job
    assert await reason(later.id) == ""


async def test_workers_command(server: Running) -> None:
    await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="cli-w", tasks=["t1", "t2"]))
    table = await jw(server.address, "workers")
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["WORKER", "KIND", "LAST", "SEEN", "HELD", "QUEUES", "TASKS"]
    [remote] = [r for r in rows if r.startswith("cli-w")]
    assert remote.split()[1] == "remote" and remote.split()[-1] == "t1,t2"
    as_json = await jw(server.address, "workers", "-o", "json")
    ids = [w["id"] for w in json.loads(as_json.out)["workers"]]
    assert "cli-w" in ids and any(i.startswith("inprocess@") for i in ids)


async def list_worker_pages(server: Running, **request: object) -> list[list[str]]:
    pages, token = [], ""
    while True:
        reply = await server.jobs.ListWorkers(
            pb.ListWorkersRequest(page_token=token, **request)  # type: ignore[arg-type]
        )
        pages.append([w.id for w in reply.workers])
        token = reply.next_page_token
        if not token:
            return pages


async def test_list_workers_pages(server: Running) -> None:
    longest = "w" * 255  # the worker id limit
    ids = ["a-1", "b-2", "ü-3", longest]
    for worker_id in ids:
        await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id=worker_id))
    assert server.app.roster is not None
    me = server.app.roster.server_id
    assert await list_worker_pages(server, page_size=2) == [
        [me, "a-1"],
        ["b-2", longest],
        ["ü-3"],
    ]
    assert await list_worker_pages(server, page_size=5) == [[me, "a-1", "b-2", longest, "ü-3"]]
    first = await server.jobs.ListWorkers(pb.ListWorkersRequest(page_size=4))
    assert len(first.next_page_token) <= 2048
    # a token belongs to its seen_within
    week = duration_pb2.Duration(seconds=FORGET_AFTER // model.SECOND)
    queues_token = (await server.jobs.ListQueues(pb.ListQueuesRequest())).next_page_token
    for request in (
        pb.ListWorkersRequest(page_token=first.next_page_token, seen_within=week),
        pb.ListWorkersRequest(page_size=-1),
        pb.ListWorkersRequest(page_token="garbage!"),
        pb.ListWorkersRequest(page_token="A" * 2049),
        pb.ListWorkersRequest(page_token=queues_token or "e30"),  # another list's, or {}
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.jobs.ListWorkers(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(err.value)) & {"page_size", "page_token"}


async def test_list_workers_pages_stay_under_4_mib(server: Running) -> None:
    # each worker asks for 1000 queues and 1000 tasks of 128 characters: about 260 KB
    queues = [f"q{i:04d}".ljust(128, "x") for i in range(1000)]
    tasks = [f"t{i:04d}".ljust(128, "y") for i in range(1000)]
    ids = [f"big-{i:02d}" for i in range(20)]
    for worker_id in ids:
        await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id=worker_id, queues=queues, tasks=tasks)
        )
    pages = await list_worker_pages(server)  # the default page size, 100, is not reached
    assert len(pages) > 1 and [w for page in pages for w in page][1:] == ids
    client_pages = await list_worker_pages(server, page_size=1000)
    assert client_pages == pages


async def test_remembered_workers_are_bounded(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a worker taking a new id at every call: the replica keeps the most recently seen
    monkeypatch.setattr(roster_module, "MAX_REMOTE_WORKERS", 5)
    roster = server.app.roster
    assert roster is not None
    for i in range(8):
        await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id=f"cycling-{i}", queues=["q1", "q2"], tasks=["t"])
        )
    # a heartbeat-like touch moves a worker to the most recently seen end
    roster.touched("cycling-3")
    await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="cycling-8", queues=["q1"]))
    await roster.flush()
    reply = await server.jobs.ListWorkers(pb.ListWorkersRequest())
    remote = [w.id for w in reply.workers if w.kind == pb.WORKER_KIND_REMOTE]
    assert remote == ["cycling-3", "cycling-5", "cycling-6", "cycling-7", "cycling-8"]
    # identical asks are held once, and freed with their last holder
    assert set(roster._asks) == {(("q1", "q2"), ("t",)), (("q1",), ())}
    assert roster._asks[("q1", "q2"), ("t",)].holders == 4


async def test_remembered_asks_are_bounded_in_bytes(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    roster = server.app.roster
    assert roster is not None
    queues = [f"q{i:04d}".ljust(128, "x") for i in range(1000)]  # the limits: 192,000 bytes
    monkeypatch.setattr(roster_module, "ASKS_BUDGET", 600_000)
    for i in range(6):  # each asks for other queues: none shared
        await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id=f"big-{i}", queues=[f"{i}{q}"[:128] for q in queues])
        )
        assert roster._asks_bytes <= 600_000
    assert list(roster._local) == ["big-3", "big-4", "big-5"]
    # one worker past the budget alone is still remembered (the newest is never forgotten)
    monkeypatch.setattr(roster_module, "ASKS_BUDGET", 1_000)
    await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="big-6", queues=queues))
    assert list(roster._local) == ["big-6"] and len(roster._asks) == 1
    # a worker asking again with other asks frees the old ones
    await server.workers.LeaseJobs(wpb.LeaseJobsRequest(worker_id="big-6", tasks=["t"]))
    assert set(roster._asks) == {((), ("t",))} and roster._asks_bytes == 1 + 64


async def test_a_flush_writes_no_more_than_the_table_keeps(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    roster = server.app.roster
    assert roster is not None
    queues = [f"q{i:03d}" for i in range(100)]  # about 1,000 characters of JSON a worker
    monkeypatch.setattr(roster_module, "TABLE_ASKS_BUDGET", 2_100)
    for i in range(5):
        await server.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id=f"many-{i}", queues=[f"{q}-{i}" for q in queues])
        )
    await roster.flush()  # writes what the table keeps, no more
    since = roster.clock.now() - 60 * model.SECOND
    stored = [r.id for r in await server.app.store.list_workers(since) if r.kind == "remote"]
    assert stored == ["many-3", "many-4"]  # the most recently seen, within the budget
