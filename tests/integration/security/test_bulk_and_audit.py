"""Bulk actions on every job need `all`; every changing call writes one audit line."""

from __future__ import annotations

import logging

import grpc
import pytest
from jobwheel.server.api.job_service import matches_every_job
from jobwheel.server.model import JobFilter, JobState, TimeRange
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as jpb

from tests.conftest import Running
from tests.integration.security.conftest import Tokens

EVERY_STATE = [s for s in job_pb2.JobState.values() if s != job_pb2.JOB_STATE_UNSPECIFIED]


@pytest.mark.parametrize(
    ("flt", "everything"),
    [
        (JobFilter(), True),
        (JobFilter(states=tuple(JobState)), True),
        (JobFilter(states=tuple(JobState)[:-1]), False),
        (JobFilter(states=tuple(JobState), queues=("q",)), False),
        (JobFilter(create_time=TimeRange(None, 5)), False),
        (JobFilter(recurring=False), False),
    ],
)
def test_filters_that_match_every_job(flt: JobFilter, everything: bool) -> None:
    assert matches_every_job(flt) is everything


async def test_a_bulk_action_on_every_job_needs_all(server: Running) -> None:
    for queue in ("a", "b"):
        await server.jobs.EnqueueJob(jpb.EnqueueJobRequest(task="remote.work", queue=queue))
    for flt in (job_pb2.JobFilter(), job_pb2.JobFilter(states=EVERY_STATE)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await server.jobs.PauseJobs(jpb.PauseJobsRequest(filter=flt))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "set `all`" in (refused.value.details() or "")
    narrowed = jpb.PauseJobsRequest(filter=job_pb2.JobFilter(queues=["a"]))
    assert (await server.jobs.PauseJobs(narrowed)).count == 1
    everything = jpb.ResumeJobsRequest(filter=job_pb2.JobFilter(states=EVERY_STATE), all=True)
    assert (await server.jobs.ResumeJobs(everything)).count == 1
    assert (await server.jobs.DeleteJobs(jpb.DeleteJobsRequest(all=True))).count == 2


async def test_changing_calls_write_one_audit_line(
    secured: Running, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobwheel.audit")
    op = tokens.bearer("operator")
    jobs = secured.jobs
    made = await jobs.EnqueueJob(jpb.EnqueueJobRequest(task="remote.work", queue="q"), metadata=op)
    batch = jpb.BatchEnqueueJobsRequest(jobs=[jpb.EnqueueJobRequest(task="t", queue="q")] * 3)
    await jobs.BatchEnqueueJobs(batch, metadata=op)
    await jobs.GetJob(jpb.GetJobRequest(id=made.job.id), metadata=op)  # a read: no line
    await jobs.ListJobs(jpb.ListJobsRequest(), metadata=op)
    await jobs.CancelJob(jpb.CancelJobRequest(id=made.job.id), metadata=op)
    bulk = jpb.CancelJobsRequest(filter=job_pb2.JobFilter(queues=["q"]))
    await jobs.CancelJobs(bulk, metadata=op)
    with pytest.raises(grpc.aio.AioRpcError):  # denied: logged as a warning, not as audit
        await jobs.UpdateQueue(jpb.UpdateQueueRequest(name="q", max_concurrency=2), metadata=op)

    lines = [r for r in caplog.records if r.name == "jobwheel.audit"]
    fields = [
        (r.__dict__["method"].rsplit("/", 1)[1], r.__dict__["principal"], r.__dict__["count"])
        for r in lines
    ]
    assert fields == [
        ("EnqueueJob", "operator", 1),
        ("BatchEnqueueJobs", "operator", 3),
        ("CancelJob", "operator", 1),
        ("CancelJobs", "operator", 3),
    ]
    assert lines[0].__dict__["targets"] == [made.job.id]
    assert lines[2].__dict__["targets"] == [made.job.id]
    assert len(lines[1].__dict__["targets"]) == 3
    assert lines[3].__dict__["filter"] == '{"queues": ["q"]}'
    assert any("UpdateQueue needs role admin" in r.getMessage() for r in caplog.records)


async def test_batch_audit_names_the_first_jobs_and_counts_all(
    secured: Running, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    """Whether the reply went out as built (every job created) or parsed (a stored key)."""
    caplog.set_level(logging.INFO, logger="jobwheel.audit")
    op = tokens.bearer("operator")
    created = await secured.jobs.BatchEnqueueJobs(
        jpb.BatchEnqueueJobsRequest(jobs=[jpb.EnqueueJobRequest(task="t", queue="q")] * 150),
        metadata=op,
    )
    mixed = await secured.jobs.BatchEnqueueJobs(
        jpb.BatchEnqueueJobsRequest(
            jobs=[
                jpb.EnqueueJobRequest(task="t", queue="q"),
                jpb.EnqueueJobRequest(task="t", queue="q", idempotency_key="k"),
                jpb.EnqueueJobRequest(task="t", queue="q", idempotency_key="k"),
            ]
        ),
        metadata=op,
    )
    lines = [r.__dict__ for r in caplog.records if r.name == "jobwheel.audit"]
    assert [(line["count"], line["targets"]) for line in lines] == [
        (150, [r.job.id for r in created.results[:100]]),
        (3, [r.job.id for r in mixed.results]),
    ]
    assert [r.already_exists for r in mixed.results] == [False, False, True]
