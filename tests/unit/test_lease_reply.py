"""LeaseJobs replies from templates equal the full conversion of each leased job."""

from __future__ import annotations

from dataclasses import replace

from jobwheel.server import model
from jobwheel.server.api.convert import job_to_proto, timestamp
from jobwheel.server.api.lease_reply import lease_messages
from jobwheel.server.model import SECOND
from jobwheel.v1 import worker_service_pb2 as pb

from tests.unit.test_outcomes import NOW, running


def full(job: model.Job) -> pb.Lease:
    return pb.Lease(
        job=job_to_proto(job),
        epoch=job.epoch,
        expire_time=timestamp(job.lease_expire_time or 0),
        traceparent=job.traceparent,
    )


def leased(**fields: object) -> model.Job:
    job = running(
        worker_id="w1",
        start_time=NOW,
        update_time=NOW,
        lease_expire_time=NOW + 30 * SECOND,
        payload={"to": "ada@example.com", "n": 1},
    )
    return replace(job, **fields)


def test_each_lease_equals_the_full_conversion() -> None:
    schedule = model.Schedule(interval=60 * SECOND, start_time=NOW - SECOND)
    jobs = [
        leased(id="a"),
        leased(id="b", payload={}, create_time=NOW - 5),  # a template shared with "a"
        leased(id="c", labels={"team": "x", "a": "b"}, idempotency_key="k-1", traceparent="00-t"),
        leased(id="d", attempt=3, execution_count=2, released_attempts=1, skipped_count=4),
        leased(id="e", last_error="ValueError: boom\n\nTraceback (most recent call last): x"),
        leased(id="f", result={"n": [1, 2.5, None, "x"]}, progress={"done": 3}),
        leased(id="g", schedule=schedule, next_run_time=None, end_time=NOW - 7),
        leased(id="h", cancel_reason="why", priority=7, queue="q2", task="t2", timeout=SECOND),
        leased(id="i", lease_expire_time=None, retry_policy=model.RetryPolicy(max_attempts=9)),
        leased(id="j", http=model.HttpTarget(url="https://e.x/", method="PUT", headers={"a": "b"})),
        leased(id="k"),  # after others: the first template again
    ]
    for job, lease in zip(jobs, lease_messages(jobs), strict=True):
        want = full(job)
        assert lease == want, job.id
        assert lease.SerializeToString(deterministic=True) == want.SerializeToString(
            deterministic=True
        )
