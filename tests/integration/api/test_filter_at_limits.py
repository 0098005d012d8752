"""A JobFilter with every field at its limit is answered on every RPC that takes one.

Each limit is tried alone elsewhere; together they multiply into the statements' bound values
(the reason a lease naming 1000 queues and 1000 tasks once answered UNAVAILABLE on SQLite).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import timestamp_pb2
from jobwheel.server.api.validate import MAX_FILTER_VALUES, MAX_LABELS
from jobwheel.v1 import job_pb2 as j
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running

MISSING = j.JOB_STATE_UNSPECIFIED


def fullest_filter(queue: str, task: str) -> j.JobFilter:
    """Every list at its limit; the last value of each names what the test job has."""
    flt = j.JobFilter(
        ids=[f"job-{i:04d}".ljust(64, "i") for i in range(MAX_FILTER_VALUES)],
        states=[s for s in j.JobState.values() if s != MISSING],
        queues=[f"q{i:04d}".ljust(128, "q") for i in range(MAX_FILTER_VALUES - 1)] + [queue],
        tasks=[f"t{i:04d}".ljust(128, "t") for i in range(MAX_FILTER_VALUES - 1)] + [task],
        labels={f"label{i:02d}": "v" * 256 for i in range(MAX_LABELS)},
        create_time=j.TimeRange(start_time=timestamp_pb2.Timestamp(seconds=1)),
        next_run_time=j.TimeRange(end_time=timestamp_pb2.Timestamp(seconds=253402300799)),
        end_time=j.TimeRange(start_time=timestamp_pb2.Timestamp(seconds=1)),
        recurring=False,
    )
    flt.payload.update({f"field{i:02d}": "x" * 900 for i in range(MAX_LABELS)})
    return flt


async def test_every_filter_rpc_answers_a_filter_at_its_limits(server: Running) -> None:
    flt = fullest_filter("mail", "send")
    await server.jobs.EnqueueJob(pb.EnqueueJobRequest(task="send", queue="mail"))
    # the enqueued job misses (no labels, no id listed), so nothing changes: each call is
    # answered, with nothing matched
    listed = await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt, page_size=1000))
    assert not listed.jobs
    ascending = pb.ListJobsRequest(filter=flt, order=pb.JOB_ORDER_CREATE_TIME_ASC)
    assert not (await server.jobs.ListJobs(ascending)).jobs
    assert (await server.jobs.GetJobStats(pb.GetJobStatsRequest(filter=flt))).total == 0
    bulk = [
        (server.jobs.CancelJobs, pb.CancelJobsRequest(filter=flt)),
        (server.jobs.PauseJobs, pb.PauseJobsRequest(filter=flt)),
        (server.jobs.ResumeJobs, pb.ResumeJobsRequest(filter=flt)),
        (server.jobs.RetryJobs, pb.RetryJobsRequest(filter=flt)),
        (server.jobs.DeleteJobs, pb.DeleteJobsRequest(filter=flt)),
    ]
    for method, request in bulk:
        assert (await method(request)).count == 0  # type: ignore[operator]
    watch = server.jobs.WatchJobs(pb.WatchJobsRequest(filter=flt, include_snapshot=True))
    first = await watch.read()
    assert first.snapshot_end
    watch.cancel()


async def test_one_value_past_a_limit_is_refused(server: Running) -> None:
    flt = fullest_filter("mail", "send")
    flt.tasks.append("one.more")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.jobs.ListJobs(pb.ListJobsRequest(filter=flt))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
