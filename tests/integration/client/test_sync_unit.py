"""The sync client's error mapping, retries, deadlines and watch resumption, with
grpc_testing in the server's seat (deterministic: no network, sleeps are recorded)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2 as ed
from jobwheel.client import (
    Aborted,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    JobwheelError,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    Retry,
    Unavailable,
    Unimplemented,
)
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

from tests.integration.client.fake import Fake

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
JOB = job_pb2.Job(id="j1", task="t", state=job_pb2.JOB_STATE_SCHEDULED)


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake()
    yield f
    f.close()


def test_reads_retry_unavailable_with_backoff(fake: Fake) -> None:
    result = fake.start(lambda c: c.get_job("j1"))
    fake.fail("GetJob", UNAVAILABLE, "connection refused")
    fake.fail("GetJob", UNAVAILABLE, "connection refused")
    assert fake.reply("GetJob", pb.GetJobResponse(job=JOB)).id == "j1"
    assert result.result(5) == JOB
    assert fake.sleeps == [0.1, 0.2]
    assert fake.timeouts == [10.0, 10.0, 10.0]


def test_aborted_is_retried_like_unavailable(fake: Fake) -> None:
    # ABORTED: the database rolled the call's transaction back; idempotent calls go again
    result = fake.start(lambda c: c.get_job("j1"))
    fake.fail("GetJob", grpc.StatusCode.ABORTED, "deadlock")
    assert fake.reply("GetJob", pb.GetJobResponse(job=JOB)).id == "j1"
    assert result.result(5) == JOB
    assert fake.sleeps == [0.1]
    # others may have had an effect (a bulk call keeps the batches it committed)
    result = fake.start(lambda c: c.cancel_job("j1"))
    fake.fail("CancelJob", grpc.StatusCode.ABORTED, "deadlock")
    with pytest.raises(Aborted, match="deadlock"):
        result.result(5)
    assert fake.sleeps == [0.1]


def test_retries_give_up_with_unavailable(fake: Fake) -> None:
    result = fake.start(lambda c: c.list_queues())
    for _ in range(4):
        fake.fail("ListQueues", UNAVAILABLE, "down")
    with pytest.raises(Unavailable, match="down"):
        result.result(5)
    assert fake.sleeps == [0.1, 0.2, 0.4]


def test_backoff_is_capped_and_jittered() -> None:
    retry = Retry(attempts=10, initial_backoff=1, max_backoff=3, multiplier=2, jitter=0.5)
    waits = list(retry.delays())
    assert len(waits) == 9
    assert all(0.5 <= w <= 4.5 for w in waits)
    assert Retry(jitter=0, max_backoff=0.3).delay(5) == 0.3


def test_enqueue_without_idempotency_key_is_not_retried(fake: Fake) -> None:
    result = fake.start(lambda c: c.enqueue_job("t", payload={"a": 1}))
    fake.fail("EnqueueJob", UNAVAILABLE)
    with pytest.raises(Unavailable):
        result.result(5)
    assert fake.sleeps == []
    assert len(fake.recording.calls) == 1


def test_enqueue_with_idempotency_key_is_retried(fake: Fake) -> None:
    result = fake.start(lambda c: c.enqueue_job("t", idempotency_key="k", delay="90s"))
    first = fake.fail("EnqueueJob", UNAVAILABLE)
    second = fake.reply("EnqueueJob", pb.EnqueueJobResponse(job=JOB, already_exists=True))
    assert first == second
    assert second.idempotency_key == "k" and second.schedule.delay.seconds == 90
    assert result.result(5).already_exists


def test_batch_enqueue_retried_only_when_every_job_has_a_key(fake: Fake) -> None:
    from jobwheel.client import enqueue_request

    keyed = [enqueue_request("t", idempotency_key=f"k{i}") for i in range(2)]
    result = fake.start(lambda c: c.batch_enqueue_jobs(keyed))
    fake.fail("BatchEnqueueJobs", UNAVAILABLE)
    fake.reply("BatchEnqueueJobs", pb.BatchEnqueueJobsResponse(results=[]))
    assert result.result(5) == []
    mixed = [*keyed, enqueue_request("t")]
    result = fake.start(lambda c: c.batch_enqueue_jobs(mixed))
    fake.fail("BatchEnqueueJobs", UNAVAILABLE)
    with pytest.raises(Unavailable):
        result.result(5)


@pytest.mark.parametrize(
    ("call", "rpc"),
    [
        (lambda c: c.cancel_job("j1", reason="r"), "CancelJob"),
        (lambda c: c.retry_job("j1"), "RetryJob"),
        (lambda c: c.trigger_job("j1"), "TriggerJob"),
        (lambda c: c.pause_job("j1"), "PauseJob"),
        (lambda c: c.resume_job("j1"), "ResumeJob"),
        (lambda c: c.delete_job("j1"), "DeleteJob"),
        (lambda c: c.cancel_jobs(states=["failed"]), "CancelJobs"),
        (lambda c: c.delete_jobs(queues=["q"]), "DeleteJobs"),
    ],
)
def test_state_changes_are_not_retried(fake: Fake, call: Any, rpc: str) -> None:
    result = fake.start(call)
    fake.fail(rpc, UNAVAILABLE)
    with pytest.raises(Unavailable):
        result.result(5)
    assert fake.sleeps == []


def test_failed_precondition_carries_error_info(fake: Fake) -> None:
    result = fake.start(lambda c: c.pause_job("j1"))
    info = ed.ErrorInfo(
        reason="INVALID_STATE", domain="jobwheel.dev", metadata={"state": "RUNNING"}
    )
    fake.fail("PauseJob", grpc.StatusCode.FAILED_PRECONDITION, "job is RUNNING", info)
    with pytest.raises(FailedPrecondition) as err:
        result.result(5)
    assert err.value.reason == "INVALID_STATE"
    assert err.value.metadata == {"state": "RUNNING"}
    assert str(err.value) == "failed precondition: job is RUNNING"


def test_invalid_argument_carries_violations(fake: Fake) -> None:
    result = fake.start(lambda c: c.preview_schedule(cron="61 * * * *", count=3))
    bad = ed.BadRequest(
        field_violations=[
            ed.BadRequest.FieldViolation(field="schedule.cron", description="minute 61")
        ]
    )
    req = fake.fail("PreviewSchedule", grpc.StatusCode.INVALID_ARGUMENT, "bad", bad)
    assert req.schedule.cron == "61 * * * *" and req.count == 3
    with pytest.raises(InvalidArgument) as err:
        result.result(5)
    assert [(v.field, v.description) for v in err.value.violations] == [
        ("schedule.cron", "minute 61")
    ]


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.OUT_OF_RANGE, OutOfRange),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.UNIMPLEMENTED, Unimplemented),
        (grpc.StatusCode.DATA_LOSS, JobwheelError),
    ],
)
def test_codes_map_to_exceptions_without_details(
    fake: Fake, code: grpc.StatusCode, kind: type[JobwheelError]
) -> None:
    result = fake.start(lambda c: c.resume_queue("q"))
    fake.fail("ResumeQueue", code, "nope")
    with pytest.raises(kind) as err:
        result.result(5)
    assert err.value.code == code and err.value.message == "nope"
    assert isinstance(err.value.__cause__, grpc.RpcError)


def test_deadline_is_passed_and_exceeded_is_not_retried() -> None:
    fake = Fake(timeout=2.5)
    try:
        result = fake.start(lambda c: c.get_job_stats(tasks=["t"]))
        fake.fail("GetJobStats", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        with pytest.raises(DeadlineExceeded):
            result.result(5)
        assert fake.timeouts == [2.5]
    finally:
        fake.close()


def test_bulk_requests_and_counts(fake: Fake) -> None:
    after = datetime(2030, 1, 2, tzinfo=UTC)
    result = fake.start(
        lambda c: c.retry_jobs(
            states=["FAILED", "cancelled"],
            labels={"team": "a"},
            payload={"customer": "acme"},
            created_after=after,
            recurring=False,
            delay=30,
        )
    )
    _, rpc = fake.take("RetryJobs")
    rpc.terminate(pb.RetryJobsResponse(count=7), (), grpc.StatusCode.OK, "")
    assert result.result(5) == 7
    result = fake.start(lambda c: c.cancel_jobs(queues=["q"], reason="cleanup"))
    req = fake.reply("CancelJobs", pb.CancelJobsResponse(count=2))
    assert list(req.filter.queues) == ["q"] and req.reason == "cleanup" and not req.all
    assert result.result(5) == 2
    result = fake.start(lambda c: c.pause_jobs(all=True))
    req = fake.reply("PauseJobs", pb.PauseJobsResponse(count=3))
    assert req.all and not req.filter.ByteSize()
    assert result.result(5) == 3


def test_filter_fields(fake: Fake) -> None:
    after = datetime(2030, 1, 2, tzinfo=UTC)
    result = fake.start(
        lambda c: c.list_jobs(
            states=["failed", job_pb2.JOB_STATE_CANCELLED],
            labels={"team": "a"},
            payload={"customer": "acme"},
            created_after=after,
            ended_before="2030-02-01T00:00:00Z",
            recurring=False,
            page_size=5,
        )
    )
    req = fake.reply("ListJobs", pb.ListJobsResponse())
    f = req.filter
    assert list(f.states) == [job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED]
    assert dict(f.labels) == {"team": "a"} and dict(f.payload) == {"customer": "acme"}
    assert f.create_time.start_time.ToDatetime(tzinfo=UTC) == after
    assert f.end_time.end_time.ToDatetime(tzinfo=UTC) == datetime(2030, 2, 1, tzinfo=UTC)
    assert f.HasField("recurring") and not f.recurring and req.page_size == 5
    assert result.result(5) == pb.ListJobsResponse()


def test_queue_calls(fake: Fake) -> None:
    result = fake.start(lambda c: c.update_queue("q", max_concurrency=4))
    fake.fail("UpdateQueue", UNAVAILABLE)  # idempotent: retried
    req = fake.reply("UpdateQueue", pb.UpdateQueueResponse(queue=job_pb2.Queue(name="q")))
    assert req.HasField("max_concurrency") and not req.HasField("max_dispatches_per_second")
    assert result.result(5).name == "q"
    result = fake.start(lambda c: c.pause_queue("q"))
    fake.reply("PauseQueue", pb.PauseQueueResponse(queue=job_pb2.Queue(name="q", paused=True)))
    assert result.result(5).paused


def test_reschedule_builds_the_schedule(fake: Fake) -> None:
    at = datetime(2031, 5, 6, 7, 8, tzinfo=UTC)
    result = fake.start(lambda c: c.reschedule_job("j1", at=at))
    req = fake.reply("RescheduleJob", pb.RescheduleJobResponse(job=JOB))
    assert req.id == "j1" and req.schedule.start_time.ToDatetime(tzinfo=UTC) == at
    assert result.result(5) == JOB


# -- watch --------------------------------------------------------------------


def event(revision: int, kind: Any = job_pb2.JOB_EVENT_TYPE_QUEUED) -> pb.WatchJobsResponse:
    return pb.WatchJobsResponse(event=job_pb2.JobEvent(revision=revision, type=kind, job=JOB))


def heartbeat(revision: int) -> pb.WatchJobsResponse:
    return pb.WatchJobsResponse(heartbeat=pb.WatchHeartbeat(revision=revision))


class Collector:
    """Consumes a watch in a thread; `wait(n)` blocks until n messages arrived."""

    def __init__(self, fake: Fake, n: int, **kwargs: Any) -> None:
        self.got: list[pb.WatchJobsResponse] = []
        self.cond = threading.Condition()
        self.error: BaseException | None = None

        def run(c: Client) -> None:
            it = c.watch_jobs(**kwargs)
            try:
                for resp in it:
                    with self.cond:
                        self.got.append(resp)
                        self.cond.notify_all()
                    if len(self.got) >= n:
                        return
            finally:
                it.close()

        self.future = fake.start(run)

    def wait(self, n: int) -> list[pb.WatchJobsResponse]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, 5)
        return self.got


def test_watch_resumes_from_the_last_revision(fake: Fake) -> None:
    watch = Collector(fake, 3, tasks=["t"])
    req, rpc = fake.take_stream()
    assert req.since_revision == 0 and list(req.filter.tasks) == ["t"]
    rpc.send_response(event(5))
    rpc.send_response(heartbeat(9))  # not yielded, but it moves the cursor
    watch.wait(1)
    rpc.terminate((), UNAVAILABLE, "connection reset")
    req, rpc = fake.take_stream()
    assert req.since_revision == 9 and list(req.filter.tasks) == ["t"]
    rpc.send_response(event(10))
    watch.wait(2)
    rpc.terminate((), grpc.StatusCode.OK, "")  # a clean end is resumed too
    req, rpc = fake.take_stream()
    assert req.since_revision == 10
    rpc.send_response(event(11))
    watch.future.result(5)
    assert [r.event.revision for r in watch.got] == [5, 10, 11]
    assert fake.sleeps == [0.1, 0.1]  # the failure count resets on every message
    assert fake.timeouts == [None, None, None]  # a watch has no deadline


def test_watch_restarts_an_unfinished_snapshot(fake: Fake) -> None:
    watch = Collector(fake, 4, include_snapshot=True)
    req, rpc = fake.take_stream()
    assert req.include_snapshot
    rpc.send_response(event(3, job_pb2.JOB_EVENT_TYPE_SNAPSHOT))
    watch.wait(1)
    rpc.terminate((), UNAVAILABLE, "")
    req, rpc = fake.take_stream()
    assert req.include_snapshot and req.since_revision == 0
    rpc.send_response(event(3, job_pb2.JOB_EVENT_TYPE_SNAPSHOT))
    rpc.send_response(pb.WatchJobsResponse(snapshot_end=pb.SnapshotEnd(revision=20)))
    watch.wait(3)
    rpc.terminate((), UNAVAILABLE, "")
    req, rpc = fake.take_stream()
    assert not req.include_snapshot and req.since_revision == 20
    rpc.send_response(event(21))
    watch.future.result(5)


def test_watch_gives_up_and_maps_other_errors() -> None:
    fake = Fake(watch_reconnects=2)
    try:
        watch = Collector(fake, 1)
        for _ in range(3):
            _, rpc = fake.take_stream()
            rpc.terminate((), UNAVAILABLE, "down")
        with pytest.raises(Unavailable):
            watch.future.result(5)
        watch = Collector(fake, 1, since_revision=1)
        _, rpc = fake.take_stream()
        rpc.terminate((), grpc.StatusCode.OUT_OF_RANGE, "revision 1 is gone")
        with pytest.raises(OutOfRange):
            watch.future.result(5)
    finally:
        fake.close()
