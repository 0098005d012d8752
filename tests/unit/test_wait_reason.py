"""Why `jobwheel wait` still waits, from the job and its queue as the server reports them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from jobwheel.client.cli.wait import waiting_reason
from jobwheel.v1 import job_pb2

NOW = datetime(2030, 1, 31, 9, 0, tzinfo=UTC)


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


def job(state: int, **fields: object) -> job_pb2.Job:
    return job_pb2.Job(id="j1", task="send", queue="mail", state=state, **fields)  # type: ignore[arg-type]


def test_scheduled_and_retrying_say_when() -> None:
    later = ts(NOW + timedelta(hours=1, minutes=5))
    assert (
        waiting_reason(job(job_pb2.JOB_STATE_SCHEDULED, next_run_time=later), None, NOW)
        == "scheduled for 2030-01-31 10:05:00Z (in 1h05m)"
    )
    soon = job(
        job_pb2.JOB_STATE_RETRYING,
        next_run_time=ts(NOW + timedelta(seconds=30)),
        last_error="OSError: refused",
    )
    assert (
        waiting_reason(soon, None, NOW)
        == "retrying at 2030-01-31 09:00:30Z (in 30s) after: OSError: refused"
    )


def test_queued_names_what_holds_it() -> None:
    queued = job(job_pb2.JOB_STATE_QUEUED)
    paused = job_pb2.Queue(name="mail", paused=True)
    assert waiting_reason(queued, paused, NOW) == (
        "queue 'mail' is paused (jobwheel queue resume mail)"
    )
    full = job_pb2.Queue(
        name="mail",
        max_concurrency=2,
        state_counts=[job_pb2.StateCount(state=job_pb2.JOB_STATE_RUNNING, count=2)],
    )
    assert waiting_reason(queued, full, NOW) == "queue 'mail' already runs its limit of 2 jobs"
    for queue in (None, job_pb2.Queue(name="mail", max_concurrency=3)):
        assert waiting_reason(queued, queue, NOW) == (
            "waiting for a worker: no in-process handler or remote worker has taken task "
            "'send' from queue 'mail' yet"
        )


def test_paused_and_running() -> None:
    assert waiting_reason(job(job_pb2.JOB_STATE_PAUSED), None, NOW) == (
        "the job is paused (jobwheel resume j1)"
    )
    running = job(job_pb2.JOB_STATE_RUNNING, worker_id="w1")
    running.progress.update({"done": 3})
    assert waiting_reason(running, None, NOW) == 'running on w1, progress {"done":3}'
    assert waiting_reason(job(job_pb2.JOB_STATE_COMPLETED), None, NOW) == ""


def test_queued_takes_the_servers_reason_first() -> None:
    said = "no worker: no in-process handler for task 'send' and no worker asked for it in 60s"
    queued = job(job_pb2.JOB_STATE_QUEUED, waiting_reason=said)
    for queue in (None, job_pb2.Queue(name="mail", paused=True)):
        assert waiting_reason(queued, queue, NOW) == said
