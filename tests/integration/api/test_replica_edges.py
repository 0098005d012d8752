"""Several server replicas on one PostgreSQL database: recurring jobs fire once per
occurrence as replicas come and go, management on one replica acts on work another runs,
remote workers report through any replica, watchers see every replica's events, idempotency
keys hold across replicas."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from jobwheel.v1 import worker_service_pb2 as wpb

from tests.conftest import fresh_pg_schema, running_server
from tests.handlers import GATES, open_gate
from tests.integration.api.waiting import eventually, until_watching, wait_for_state

pytestmark = pytest.mark.postgres


def _secs(s: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(int(s * 1_000_000))
    return d


async def _attempts(stub, job_id: str) -> list:
    return list((await stub.ListJobAttempts(pb.ListJobAttemptsRequest(job_id=job_id))).attempts)


async def test_cancel_on_a_of_a_handler_running_on_b() -> None:
    gate = f"g-{uuid.uuid4().hex}"
    async with fresh_pg_schema() as url, running_server(url) as b:
        job = (
            await b.jobs.EnqueueJob(
                pb.EnqueueJobRequest(task="test.gate", payload=_struct({"gate": gate}))
            )
        ).job
        await wait_for_state(b.jobs, job.id, (job_pb2.JOB_STATE_RUNNING,))
        assert b.app.engine.dispatcher.holds(job.id)
        async with running_server(url) as a:
            await a.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="stop it"))
            done = await wait_for_state(a.jobs, job.id)
            assert done.state == job_pb2.JOB_STATE_CANCELLED
            # b's handler is cancelled (b no longer holds the attempt), without the gate opening
            await eventually(lambda: not b.app.engine.dispatcher.holds(job.id), "b's cancel")
            assert not GATES[gate].is_set()

            async def ended() -> bool:
                return all(x.HasField("end_time") for x in await _attempts(a.jobs, job.id))

            deadline = time.monotonic() + 10
            while not await ended():
                assert time.monotonic() < deadline, "the attempt never ended"
                await asyncio.sleep(0.05)
            atts = await _attempts(a.jobs, job.id)
            assert len(atts) == 1
            # and it stays cancelled: nothing re-runs it
            await asyncio.sleep(0.5)
            assert (await a.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.state == (
                job_pb2.JOB_STATE_CANCELLED
            )
            open_gate(gate)


def _struct(d: dict):
    from google.protobuf import struct_pb2

    s = struct_pb2.Struct()
    s.update(d)
    return s


async def test_remote_worker_leases_on_a_heartbeats_and_completes_on_b() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        job = (await a.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.only"))).job
        lease = await a.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="w1", tasks=["remote.only"], max_jobs=1)
        )
        [leased] = lease.leases
        hb = await b.workers.HeartbeatJob(
            wpb.HeartbeatJobRequest(
                job_id=job.id, epoch=leased.epoch, worker_id="w1", lease_duration=_secs(60)
            )
        )
        assert not hb.cancel_requested
        assert hb.expire_time.ToMicroseconds() > leased.expire_time.ToMicroseconds() - 1
        await b.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job.id, epoch=leased.epoch, worker_id="w1")
        )
        done = await wait_for_state(a.jobs, job.id)
        assert done.state == job_pb2.JOB_STATE_COMPLETED
        atts = await _attempts(b.jobs, job.id)
        assert len(atts) == 1 and atts[0].HasField("end_time")


async def test_cancel_on_b_of_a_job_leased_on_a_is_told_at_the_heartbeat_on_a() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        job = (await a.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.only"))).job
        lease = await a.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="w1", tasks=["remote.only"], max_jobs=1)
        )
        [leased] = lease.leases
        await b.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="nope"))
        hb = await a.workers.HeartbeatJob(
            wpb.HeartbeatJobRequest(job_id=job.id, epoch=leased.epoch, worker_id="w1")
        )
        assert hb.cancel_requested
        assert (await wait_for_state(a.jobs, job.id)).state == job_pb2.JOB_STATE_CANCELLED


async def test_idempotent_enqueues_racing_on_two_replicas_make_one_job() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        for round_ in range(5):
            key = f"k-{round_}-{uuid.uuid4().hex}"
            calls = [
                (a if i % 2 else b).jobs.EnqueueJob(
                    pb.EnqueueJobRequest(task="remote.only", idempotency_key=key)
                )
                for i in range(16)
            ]
            replies = await asyncio.gather(*calls)
            assert len({r.job.id for r in replies}) == 1
            listed = await a.jobs.ListJobs(pb.ListJobsRequest(page_size=1000))
            assert sum(1 for j in listed.jobs if j.idempotency_key == key) == 1


async def test_watch_on_a_sees_b_gap_free_and_resumes_on_b() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        flt = job_pb2.JobFilter(tasks=["test.echo"])
        watch = a.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt))
        await until_watching(a, 1)
        ids: list[str] = []
        for i in range(30):
            srv = b if i % 3 else a
            ids.append((await srv.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo"))).job.id)
        for job_id in ids:
            await wait_for_state(b.jobs, job_id)
        revs: list[int] = []

        async def read(stream, out: list[int], want: int) -> None:
            async for msg in stream:
                evs = [msg.event] if msg.HasField("event") else list(msg.batch.events)
                for ev in evs:
                    out.append(ev.revision)
                if len(out) >= want:
                    return

        # each job: ENQUEUED, STARTED, COMPLETED
        await asyncio.wait_for(read(watch, revs, 45), 15)
        watch.cancel()
        assert revs == sorted(revs) and len(set(revs)) == len(revs)
        resume_from = revs[44]
        # resume on the other replica, from the history
        again = b.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt, since_revision=resume_from))
        rest: list[int] = []
        await asyncio.wait_for(read(again, rest, 45), 15)
        again.cancel()
        assert rest == sorted(rest) and rest[0] > resume_from
        all_revs = revs[:45] + rest[:45]
        assert len(set(all_revs)) == 90


async def test_interval_job_fires_once_per_occurrence_with_three_replicas() -> None:
    async with (
        fresh_pg_schema() as url,
        running_server(url, recover_interval=0.5) as a,
        running_server(url, recover_interval=0.5) as b,
    ):
        c_cm = running_server(url, recover_interval=0.5)
        await c_cm.__aenter__()
        stopped = False
        try:
            start = timestamp_pb2.Timestamp()
            start.FromMicroseconds(int((time.time() + 0.5) * 1_000_000))
            job = (
                await a.jobs.EnqueueJob(
                    pb.EnqueueJobRequest(
                        task="test.noop",
                        schedule=job_pb2.Schedule(interval=_secs(1.0), start_time=start),
                    )
                )
            ).job
            await asyncio.sleep(3.2)
            await c_cm.__aexit__(None, None, None)
            stopped = True
            await asyncio.sleep(3.0)
            await a.jobs.PauseJob(pb.PauseJobRequest(id=job.id))
            await asyncio.sleep(0.5)
            got = (await b.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
            atts = await _attempts(b.jobs, job.id)
            starts = sorted(x.start_time.ToMicroseconds() for x in atts)
            gaps = [(y - x) / 1e6 for x, y in itertools.pairwise(starts)]
            assert len(atts) == got.execution_count, (len(atts), got.execution_count)
            assert all(g > 0.7 for g in gaps), gaps  # no occurrence ran twice
            assert len(atts) >= 4, len(atts)  # the others went on after c stopped
        finally:
            if not stopped:
                await c_cm.__aexit__(None, None, None)


async def test_graceful_stop_of_b_hands_its_running_job_to_a_promptly() -> None:
    gate = f"g-{uuid.uuid4().hex}"
    async with fresh_pg_schema() as url:
        b_cm = running_server(url, recover_interval=0.5)
        b = await b_cm.__aenter__()
        job = (
            await b.jobs.EnqueueJob(
                pb.EnqueueJobRequest(task="test.gate", payload=_struct({"gate": gate}))
            )
        ).job
        await wait_for_state(b.jobs, job.id, (job_pb2.JOB_STATE_RUNNING,))
        async with running_server(url, recover_interval=0.5) as a:  # b alone claimed it
            await b_cm.__aexit__(None, None, None)  # grace 0.5 s: the attempt is released
            # released, not left to its lease (30 s): a runs it at once
            await eventually(lambda: a.app.engine.dispatcher.holds(job.id), "a runs it", 5)
            open_gate(gate)
            done = await wait_for_state(a.jobs, job.id)
            assert done.state == job_pb2.JOB_STATE_COMPLETED
            atts = await _attempts(a.jobs, job.id)
            assert len(atts) == 2 and all(x.HasField("end_time") for x in atts)


async def test_remote_lease_of_a_stopped_replica_expires_and_another_recovers_it() -> None:
    async with fresh_pg_schema() as url, running_server(url, recover_interval=0.3) as a:
        b_cm = running_server(url, recover_interval=0.3)
        b = await b_cm.__aenter__()
        job = (await b.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.only"))).job
        lease = await b.workers.LeaseJobs(
            wpb.LeaseJobsRequest(
                worker_id="w1", tasks=["remote.only"], max_jobs=1, lease_duration=_secs(1)
            )
        )
        [first] = lease.leases
        await b_cm.__aexit__(None, None, None)
        # the worker vanished too: a recovers the job once its lease expires
        again = await a.workers.LeaseJobs(
            wpb.LeaseJobsRequest(worker_id="w2", tasks=["remote.only"], max_jobs=1, wait=_secs(8))
        )
        assert [x.job.id for x in again.leases] == [job.id]
        second = again.leases[0]
        assert second.epoch > first.epoch
        with pytest.raises(grpc.aio.AioRpcError) as stale:  # the stale epoch is fenced
            await a.workers.CompleteJob(
                wpb.CompleteJobRequest(job_id=job.id, epoch=first.epoch, worker_id="w1")
            )
        assert stale.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        await a.workers.CompleteJob(
            wpb.CompleteJobRequest(job_id=job.id, epoch=second.epoch, worker_id="w2")
        )
        assert (await wait_for_state(a.jobs, job.id)).state == job_pb2.JOB_STATE_COMPLETED
        atts = await _attempts(a.jobs, job.id)
        assert len(atts) == 2 and all(x.HasField("end_time") for x in atts)


async def test_reschedule_and_delete_on_a_of_a_job_due_in_bs_wheel() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        resched = (
            await b.jobs.EnqueueJob(
                pb.EnqueueJobRequest(task="test.echo", schedule=job_pb2.Schedule(delay=_secs(1.0)))
            )
        ).job
        deleted = (
            await b.jobs.EnqueueJob(
                pb.EnqueueJobRequest(task="test.echo", schedule=job_pb2.Schedule(delay=_secs(1.0)))
            )
        ).job
        later = timestamp_pb2.Timestamp()
        later.FromMicroseconds(int((time.time() + 3600) * 1_000_000))
        await a.jobs.RescheduleJob(
            pb.RescheduleJobRequest(id=resched.id, schedule=job_pb2.Schedule(start_time=later))
        )
        await a.jobs.DeleteJob(pb.DeleteJobRequest(id=deleted.id))
        await asyncio.sleep(2.0)
        got = (await b.jobs.GetJob(pb.GetJobRequest(id=resched.id))).job
        assert got.state == job_pb2.JOB_STATE_SCHEDULED
        assert got.execution_count == 0 and not await _attempts(b.jobs, resched.id)


async def test_allow_all_overlap_spawns_one_child_per_occurrence_across_replicas() -> None:
    gate = f"g-{uuid.uuid4().hex}"
    async with (
        fresh_pg_schema() as url,
        running_server(url) as a,
        running_server(url) as b,
        running_server(url),
    ):
        start = timestamp_pb2.Timestamp()
        start.FromMicroseconds(int((time.time() + 0.3) * 1_000_000))
        job = (
            await a.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="test.gate",
                    payload=_struct({"gate": gate}),
                    schedule=job_pb2.Schedule(
                        interval=_secs(1.0),
                        start_time=start,
                        overlap_policy=job_pb2.OVERLAP_POLICY_ALLOW_ALL,
                    ),
                )
            )
        ).job
        await asyncio.sleep(3.5)
        await a.jobs.CancelJob(pb.CancelJobRequest(id=job.id))
        open_gate(gate)
        await asyncio.sleep(0.5)
        listed = await b.jobs.ListJobs(pb.ListJobsRequest(page_size=1000))
        children = [j for j in listed.jobs if j.labels.get("jobwheel.parent") == job.id]
        keys = [j.idempotency_key for j in children]
        assert len(keys) == len(set(keys)), keys
        assert 2 <= len(children) <= 4, len(children)


async def _overlap_run(policy: int, ms: int, seconds: float) -> tuple[str, str, list]:
    from tests.handlers import OVERLAP_MOST

    queue = f"q{uuid.uuid4().hex[:12]}"
    async with (
        fresh_pg_schema() as url,
        running_server(url) as a,
        running_server(url) as b,
    ):
        start = timestamp_pb2.Timestamp()
        start.FromMicroseconds(int((time.time() + 0.3) * 1_000_000))
        job = (
            await a.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="test.overlap",
                    queue=queue,
                    payload=_struct({"ms": ms}),
                    schedule=job_pb2.Schedule(
                        interval=_secs(1.0), start_time=start, overlap_policy=policy
                    ),
                )
            )
        ).job
        await asyncio.sleep(seconds)
        atts = await _attempts(b.jobs, job.id)
        await a.jobs.CancelJob(pb.CancelJobRequest(id=job.id))
        await asyncio.sleep(0.3)
        return queue, OVERLAP_MOST.get(queue, 0), atts


async def test_skip_overlap_never_runs_two_executions_at_once_across_replicas() -> None:
    _, most, atts = await _overlap_run(job_pb2.OVERLAP_POLICY_SKIP, 2500, 4.0)
    assert most == 1, most
    assert 1 <= len(atts) <= 3


async def test_cancel_other_overlap_across_replicas_runs_one_at_a_time() -> None:
    _, most, atts = await _overlap_run(job_pb2.OVERLAP_POLICY_CANCEL_OTHER, 60_000, 3.6)
    assert most == 1, most
    # each occurrence cancelled the one before and ran: about one attempt per second
    assert 3 <= len(atts) <= 4, [(x.outcome, x.error) for x in atts]


async def test_cancel_from_a_frees_bs_queue_concurrency_slot() -> None:
    gate = f"g-{uuid.uuid4().hex}"
    queue = f"q{uuid.uuid4().hex[:12]}"
    async with fresh_pg_schema() as url, running_server(url) as b:
        await b.jobs.UpdateQueue(pb.UpdateQueueRequest(name=queue, max_concurrency=1))
        job = (
            await b.jobs.EnqueueJob(
                pb.EnqueueJobRequest(task="test.gate", queue=queue, payload=_struct({"gate": gate}))
            )
        ).job
        await wait_for_state(b.jobs, job.id, (job_pb2.JOB_STATE_RUNNING,))
        async with running_server(url) as a:
            await a.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="x"))
            await wait_for_state(a.jobs, job.id)
            await eventually(lambda: not b.app.engine.dispatcher.holds(job.id), "b's cancel")
        # a is gone: b alone must run the queue's next job in its only slot
        nxt = (await b.jobs.EnqueueJob(pb.EnqueueJobRequest(task="test.echo", queue=queue))).job
        assert (await wait_for_state(b.jobs, nxt.id, within=5)).state == job_pb2.JOB_STATE_COMPLETED
        open_gate(gate)


async def test_a_cancelled_remote_job_completed_through_the_other_replica_stays_cancelled() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        job = (await a.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.only"))).job
        [leased] = (
            await a.workers.LeaseJobs(
                wpb.LeaseJobsRequest(worker_id="w1", tasks=["remote.only"], max_jobs=1)
            )
        ).leases
        await a.jobs.CancelJob(pb.CancelJobRequest(id=job.id, reason="nope"))
        with contextlib.suppress(Exception):
            await b.workers.CompleteJob(
                wpb.CompleteJobRequest(job_id=job.id, epoch=leased.epoch, worker_id="w1")
            )
        got = (await b.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
        assert got.state == job_pb2.JOB_STATE_CANCELLED
        atts = await _attempts(b.jobs, job.id)
        assert len(atts) == 1 and atts[0].outcome == job_pb2.ATTEMPT_OUTCOME_CANCELLED


async def test_batch_enqueues_with_crossing_idempotency_keys_on_two_replicas() -> None:
    import grpc

    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        for round_ in range(4):
            keys = [f"r{round_}-{i}-{uuid.uuid4().hex[:6]}" for i in range(200)]

            def batch(ks: list[str]) -> pb.BatchEnqueueJobsRequest:
                return pb.BatchEnqueueJobsRequest(
                    jobs=[pb.EnqueueJobRequest(task="remote.only", idempotency_key=k) for k in ks]
                )

            replies = await asyncio.gather(
                a.jobs.BatchEnqueueJobs(batch(keys)),
                b.jobs.BatchEnqueueJobs(batch(list(reversed(keys)))),
                a.jobs.BatchEnqueueJobs(batch(keys[100:] + keys[:100])),
                return_exceptions=True,
            )
            errors = [r for r in replies if isinstance(r, Exception)]
            assert all(
                isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.ABORTED
                for e in errors
            ), errors
            by_key: dict[str, set[str]] = {}
            for r in replies:
                if isinstance(r, Exception):
                    continue
                for res in r.results:
                    by_key.setdefault(res.job.idempotency_key, set()).add(res.job.id)
            assert all(len(v) == 1 for v in by_key.values())
            stats = await a.jobs.ListJobs(pb.ListJobsRequest(page_size=1000))
            mine = [j for j in stats.jobs if j.idempotency_key in set(keys)]
            assert len(mine) == len(keys), len(mine)
            assert not errors, errors


async def test_trigger_on_a_of_a_recurring_job_in_bs_wheel_runs_once() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        job = (
            await b.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="test.noop", schedule=job_pb2.Schedule(interval=_secs(3600))
                )
            )
        ).job
        for _ in range(3):
            await a.jobs.TriggerJob(pb.TriggerJobRequest(id=job.id))
            await wait_for_state(a.jobs, job.id, (job_pb2.JOB_STATE_SCHEDULED,))
            await asyncio.sleep(0.3)
        got = (await b.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
        atts = await _attempts(a.jobs, job.id)
        assert len(atts) == got.execution_count


async def test_resume_on_b_right_after_a_write_on_a() -> None:
    async with fresh_pg_schema() as url, running_server(url) as a, running_server(url) as b:
        flt = job_pb2.JobFilter(tasks=["remote.only"])
        watch = a.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt))
        await until_watching(a, 1)
        for _i in range(20):
            await a.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.only"))
            msg = await asyncio.wait_for(watch.read(), 5)
            while not msg.HasField("event"):
                msg = await asyncio.wait_for(watch.read(), 5)
            rev = msg.event.revision
            # at once, on b, which may not have heard of rev yet
            other = b.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt, since_revision=rev))
            await a.jobs.EnqueueJob(pb.EnqueueJobRequest(task="remote.only"))
            nxt = await asyncio.wait_for(other.read(), 5)
            while not nxt.HasField("event"):
                nxt = await asyncio.wait_for(other.read(), 5)
            assert nxt.event.revision == rev + 1, (rev, nxt.event.revision)
            other.cancel()
            msg = await asyncio.wait_for(watch.read(), 5)
        watch.cancel()


async def test_recurring_job_running_on_a_stopping_replica_keeps_firing_on_the_other() -> None:
    queue = f"q{uuid.uuid4().hex[:12]}"
    async with fresh_pg_schema() as url, running_server(url, recover_interval=0.5) as a:
        b_cm = running_server(url, recover_interval=0.5)
        b = await b_cm.__aenter__()
        start = timestamp_pb2.Timestamp()
        start.FromMicroseconds(int((time.time() + 0.2) * 1_000_000))
        job = (
            await a.jobs.EnqueueJob(
                pb.EnqueueJobRequest(
                    task="test.overlap",
                    queue=queue,
                    payload=_struct({"ms": 700}),
                    schedule=job_pb2.Schedule(interval=_secs(1.0), start_time=start),
                )
            )
        ).job
        # stop b while one of the runs is on it
        deadline = time.monotonic() + 6
        while not b.app.engine.dispatcher.holds(job.id):
            assert time.monotonic() < deadline, "b never ran it"
            await asyncio.sleep(0.02)
        await b_cm.__aexit__(None, None, None)
        before = (await a.jobs.GetJob(pb.GetJobRequest(id=job.id))).job.execution_count
        await asyncio.sleep(3.0)
        got = (await a.jobs.GetJob(pb.GetJobRequest(id=job.id))).job
        await a.jobs.CancelJob(pb.CancelJobRequest(id=job.id))
        assert got.execution_count >= before + 2, (before, got.execution_count)
        atts = await _attempts(a.jobs, job.id)
        ended = [x for x in atts if x.HasField("end_time")]
        # one attempt row per attempt: (execution, attempt) pairs unique
        pairs = [(x.execution, x.number) for x in atts]
        assert len(pairs) == len(set(pairs)), pairs
        assert len(ended) >= len(atts) - 1
