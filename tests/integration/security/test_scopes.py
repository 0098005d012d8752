"""Queue scopes: a token limited to queues sees and touches only their jobs; leases belong to
the principal that took them."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2
from hypothesis import given
from hypothesis import strategies as st
from jobwheel.server.model import JobFilter
from jobwheel.server.security.principal import (
    NO_QUEUE,
    Principal,
    narrow,
    reset_current,
    set_current,
)
from jobwheel.server.security.roles import Role
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import Running
from tests.integration.security.conftest import Tokens, error_info


async def enqueue(server: Running, tokens: Tokens, queue: str, who: str = "admin") -> job_pb2.Job:
    request = jpb.EnqueueJobRequest(task="remote.work", queue=queue)
    reply = await server.jobs.EnqueueJob(request, metadata=tokens.bearer(who))
    return reply.job


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_a_scoped_token_sees_and_touches_only_its_queues(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("mail-ops", Role.OPERATOR, ("emails",))
    tokens.add("mail-ci", Role.PRODUCER, ("emails", "newsletters"))
    mine = tokens.bearer("mail-ops")
    email = await enqueue(secured, tokens, "emails")
    sms = await enqueue(secured, tokens, "sms")
    jobs = secured.jobs

    # enqueue: own queues only, batches all-or-nothing
    assert (await enqueue(secured, tokens, "newsletters", "mail-ci")).queue == "newsletters"
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await enqueue(secured, tokens, "sms", "mail-ci")
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "sms" in (denied.value.details() or "")
    batch = jpb.BatchEnqueueJobsRequest(
        jobs=[jpb.EnqueueJobRequest(task="t", queue="emails"), jpb.EnqueueJobRequest(task="t")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await jobs.BatchEnqueueJobs(batch, metadata=tokens.bearer("mail-ci"))
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED  # "default" is not its queue
    assert "jobs[1].queue" in (denied.value.details() or "")

    # reads: another queue's job does not exist for it
    assert (await jobs.GetJob(jpb.GetJobRequest(id=email.id), metadata=mine)).job.id == email.id
    for call in (
        jobs.GetJob(jpb.GetJobRequest(id=sms.id), metadata=mine),
        jobs.ListJobAttempts(jpb.ListJobAttemptsRequest(job_id=sms.id), metadata=mine),
        jobs.CancelJob(jpb.CancelJobRequest(id=sms.id), metadata=mine),
        jobs.PauseJob(jpb.PauseJobRequest(id=sms.id), metadata=mine),
        jobs.DeleteJob(jpb.DeleteJobRequest(id=sms.id), metadata=mine),
    ):
        assert await code_of(call) is grpc.StatusCode.NOT_FOUND
    listed = await jobs.ListJobs(jpb.ListJobsRequest(), metadata=mine)
    assert [j.id for j in listed.jobs] == [email.id]
    asked = jpb.ListJobsRequest(filter=job_pb2.JobFilter(queues=["sms"]))
    assert not (await jobs.ListJobs(asked, metadata=mine)).jobs
    stats = await jobs.GetJobStats(jpb.GetJobStatsRequest(), metadata=mine)
    assert stats.total == 1 and [c.queue for c in stats.queue_counts] == ["emails"]
    queues = await jobs.ListQueues(jpb.ListQueuesRequest(), metadata=mine)
    assert [q.name for q in queues.queues] == ["emails"]
    watch = jobs.WatchJobs(jpb.WatchJobsRequest(include_snapshot=True), metadata=mine)
    seen = []
    async for message in watch:
        if message.HasField("snapshot_end"):
            break
        seen.append(message.event.job.id)
    watch.cancel()
    assert seen == [email.id]

    # queue actions and subscriptions
    pause_sms = jobs.PauseQueue(jpb.PauseQueueRequest(name="sms"), metadata=mine)
    assert await code_of(pause_sms) is grpc.StatusCode.PERMISSION_DENIED
    assert (await jobs.PauseQueue(jpb.PauseQueueRequest(name="emails"), metadata=mine)).queue.paused

    # bulk: `all` reaches every job of its queues, none of the others
    everything = jpb.CancelJobsRequest(all=True, reason="cleanup")
    assert (await jobs.CancelJobs(everything, metadata=mine)).count == 1
    still = await jobs.GetJob(jpb.GetJobRequest(id=sms.id), metadata=tokens.bearer("admin"))
    assert still.job.state == job_pb2.JOB_STATE_QUEUED


async def test_scoped_admin_cannot_manage_event_subscriptions(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("team-admin", Role.ADMIN, ("emails",))
    call = secured.jobs.ListEventSubscriptions(
        jpb.ListEventSubscriptionsRequest(), metadata=tokens.bearer("team-admin")
    )
    assert await code_of(call) is grpc.StatusCode.PERMISSION_DENIED
    update = secured.jobs.UpdateQueue(
        jpb.UpdateQueueRequest(name="emails", max_concurrency=3),
        metadata=tokens.bearer("team-admin"),
    )
    assert (await update).queue.max_concurrency == 3


async def test_only_unscoped_readers_list_workers(secured: Running, tokens: Tokens) -> None:
    tokens.add("team-reader", Role.READER, ("emails",))
    request = jpb.ListWorkersRequest()
    scoped = secured.jobs.ListWorkers(request, metadata=tokens.bearer("team-reader"))
    assert await code_of(scoped) is grpc.StatusCode.PERMISSION_DENIED
    reply = await secured.jobs.ListWorkers(request, metadata=tokens.bearer("reader"))
    assert [w.kind for w in reply.workers] == [jpb.WORKER_KIND_SERVER]


@given(
    asked=st.lists(st.sampled_from("abcdef"), max_size=4),
    scope=st.frozensets(st.sampled_from("abcdef"), min_size=1),
)
def test_a_narrowed_filter_never_leaves_the_scope(asked: list[str], scope: frozenset[str]) -> None:
    token = set_current(Principal("p", Role.READER, scope))
    try:
        narrowed = narrow(JobFilter(queues=tuple(asked), tasks=("t",)))
    finally:
        reset_current(token)
    assert narrowed.tasks == ("t",)
    expected = (set(asked) & scope if asked else scope) or {NO_QUEUE}
    assert set(narrowed.queues) == expected


def lease_request(worker: str, *queues: str) -> wpb.LeaseJobsRequest:
    return wpb.LeaseJobsRequest(
        worker_id=worker,
        queues=list(queues),
        max_jobs=10,
        lease_duration=duration_pb2.Duration(seconds=30),
    )


async def test_a_scoped_worker_leases_only_from_its_queues(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("mail-worker", Role.WORKER, ("emails",))
    email = await enqueue(secured, tokens, "emails")
    await enqueue(secured, tokens, "sms")
    mine = tokens.bearer("mail-worker")
    denied = secured.workers.LeaseJobs(lease_request("w1", "sms"), metadata=mine)
    assert await code_of(denied) is grpc.StatusCode.PERMISSION_DENIED
    leased = await secured.workers.LeaseJobs(lease_request("w1"), metadata=mine)
    assert [lease.job.id for lease in leased.leases] == [email.id]
    assert leased.leases[0].job.worker_id == "mail-worker/w1"
    # another queue's job, leased by an unscoped worker: it does not exist for this one
    tokens.add("any-worker", Role.WORKER)
    [other] = (
        await secured.workers.LeaseJobs(lease_request("w2"), metadata=tokens.bearer("any-worker"))
    ).leases
    report = wpb.CompleteJobRequest(job_id=other.job.id, epoch=other.epoch, worker_id="w1")
    assert (
        await code_of(secured.workers.CompleteJob(report, metadata=mine))
        is grpc.StatusCode.NOT_FOUND
    )


async def test_only_the_principal_that_leased_a_job_can_report_on_it(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("team-a", Role.WORKER)
    tokens.add("team-b", Role.WORKER)
    job = await enqueue(secured, tokens, "shared")
    leased = await secured.workers.LeaseJobs(lease_request("w1"), metadata=tokens.bearer("team-a"))
    [lease] = leased.leases
    assert lease.job.id == job.id

    # team-b knows the job id, the epoch and even the worker id: it still does not hold the lease
    forged = wpb.CompleteJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1")
    fail = wpb.FailJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1", error="x")
    beat = wpb.HeartbeatJobRequest(job_id=job.id, epoch=lease.epoch, worker_id="w1")
    for call in (
        secured.workers.CompleteJob(forged, metadata=tokens.bearer("team-b")),
        secured.workers.FailJob(fail, metadata=tokens.bearer("team-b")),
        secured.workers.HeartbeatJob(beat, metadata=tokens.bearer("team-b")),
    ):
        try:
            await call
        except grpc.aio.AioRpcError as err:
            assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
            info = error_info(err)
            assert info is not None and info.reason == "LEASE_NOT_HELD"
        else:
            raise AssertionError("another principal's report was accepted")
    current = await secured.jobs.GetJob(
        jpb.GetJobRequest(id=job.id), metadata=tokens.bearer("admin")
    )
    assert current.job.state == job_pb2.JOB_STATE_RUNNING

    done = await secured.workers.CompleteJob(forged, metadata=tokens.bearer("team-a"))
    assert done.job.state == job_pb2.JOB_STATE_COMPLETED


async def test_a_worker_id_with_its_principal_name_stays_within_the_limit(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("w" * 10, Role.WORKER)
    mine = tokens.bearer("w" * 10)
    # the stored owner is "<principal>/<worker id>": 10 + 1 + 244 = 255 characters, the limit
    ok = await secured.workers.LeaseJobs(lease_request("x" * 244), metadata=mine)
    assert list(ok.leases) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await secured.workers.LeaseJobs(lease_request("x" * 245), metadata=mine)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "worker_id: with the principal name it is longer than 255" in (
        caught.value.details() or ""
    )


async def test_batch_reports_hold_ownership_and_scope_per_item(
    secured: Running, tokens: Tokens
) -> None:
    tokens.add("team-a", Role.WORKER)
    tokens.add("team-b", Role.WORKER, ("emails",))
    theirs = await enqueue(secured, tokens, "shared")
    email = await enqueue(secured, tokens, "emails")
    [a] = (
        await secured.workers.LeaseJobs(
            lease_request("w1", "shared"), metadata=tokens.bearer("team-a")
        )
    ).leases
    [b] = (
        await secured.workers.LeaseJobs(lease_request("w1"), metadata=tokens.bearer("team-b"))
    ).leases
    assert (a.job.id, b.job.id) == (theirs.id, email.id)
    # team-b names its own lease and team-a's (same worker id, right epoch) in one batch: its
    # own completes, team-a's is outside its queues and does not exist for it
    items = [
        wpb.JobCompletion(job_id=b.job.id, epoch=b.epoch),
        wpb.JobCompletion(job_id=a.job.id, epoch=a.epoch),
    ]
    resp = await secured.workers.CompleteJobs(
        wpb.CompleteJobsRequest(worker_id="w1", completions=items), metadata=tokens.bearer("team-b")
    )
    assert [r.status.code for r in resp.results] == [0, grpc.StatusCode.NOT_FOUND.value[0]]
    # an unscoped principal sees the job, but does not hold team-a's lease
    tokens.add("team-c", Role.WORKER)
    beats = wpb.HeartbeatJobsRequest(
        worker_id="w1", heartbeats=[wpb.JobHeartbeat(job_id=a.job.id, epoch=a.epoch)]
    )
    fails = wpb.FailJobsRequest(
        worker_id="w1", failures=[wpb.JobFailure(job_id=a.job.id, epoch=a.epoch, error="x")]
    )
    for reply in (
        await secured.workers.HeartbeatJobs(beats, metadata=tokens.bearer("team-c")),
        await secured.workers.FailJobs(fails, metadata=tokens.bearer("team-c")),
    ):
        [result] = reply.results
        assert result.status.reason == "LEASE_NOT_HELD"
        assert result.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    current = await secured.jobs.GetJob(
        jpb.GetJobRequest(id=a.job.id), metadata=tokens.bearer("admin")
    )
    assert current.job.state == job_pb2.JOB_STATE_RUNNING
