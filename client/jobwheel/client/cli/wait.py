"""`jobwheel wait`: follows one job with WatchJobs and says why it is still waiting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from jobwheel.client.cli import render
from jobwheel.client.cli.base import Command, command, duration
from jobwheel.client.cli.commands import job_id_argument
from jobwheel.client.cli.ids import resolve
from jobwheel.client.convert import from_timestamp
from jobwheel.client.errors import DeadlineExceeded, JobwheelError
from jobwheel.client.filters import state_name
from jobwheel.client.sync import Client
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

QueueLookup = Callable[[str], "job_pb2.Queue | None"]


def _in(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    seconds = max((moment - now).total_seconds(), 0.0)
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    span = (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )
    return f" (in {span})"


def _queued(job: job_pb2.Job, queue: job_pb2.Queue | None) -> str:
    # Checks in order of certainty: the server's own word first (no worker asked for the
    # task lately: Job.waiting_reason, set by GetJob), then what the queue shows.
    if job.waiting_reason:
        return job.waiting_reason
    if queue is not None and queue.paused:
        return f"queue {job.queue!r} is paused (jobwheel queue resume {job.queue})"
    if queue is not None and queue.max_concurrency:
        running = sum(c.count for c in queue.state_counts if c.state == job_pb2.JOB_STATE_RUNNING)
        if running >= queue.max_concurrency:
            return f"queue {job.queue!r} already runs its limit of {queue.max_concurrency} jobs"
    return (
        f"waiting for a worker: no in-process handler or remote worker has taken task "
        f"{job.task!r} from queue {job.queue!r} yet"
    )


def waiting_reason(job: job_pb2.Job, queue: job_pb2.Queue | None, now: datetime) -> str:
    """Why the job has not finished yet, in words, from what the server reports."""
    state = job.state
    next_run = from_timestamp(job.next_run_time)
    if state == job_pb2.JOB_STATE_SCHEDULED:
        return f"scheduled for {render.when(job.next_run_time)}{_in(next_run, now)}"
    if state == job_pb2.JOB_STATE_RETRYING:
        error = f" after: {job.last_error}" if job.last_error else ""
        return f"retrying at {render.when(job.next_run_time)}{_in(next_run, now)}{error}"
    if state == job_pb2.JOB_STATE_PAUSED:
        return f"the job is paused (jobwheel resume {job.id})"
    if state == job_pb2.JOB_STATE_QUEUED:
        return _queued(job, queue)
    if state == job_pb2.JOB_STATE_RUNNING:
        worker = f" on {job.worker_id}" if job.worker_id else ""
        progress = f", progress {render.compact(job.progress)}" if job.HasField("progress") else ""
        return f"running{worker}{progress}"
    return ""


class Progress:
    """Prints a line to stderr whenever the job's state, attempt or reason changes."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.last = ""
        self.job: job_pb2.Job | None = None

    def queue(self, name: str) -> job_pb2.Queue | None:
        try:
            return next((q for q in self.client.list_queues() if q.name == name), None)
        except JobwheelError:
            return None  # the reason is a courtesy: waiting goes on without it

    def explained(self, job: job_pb2.Job) -> job_pb2.Job:
        """The job with its waiting_reason, which GetJob sets but watch events do not."""
        try:
            current = self.client.get_job(job.id)
        except JobwheelError:
            return job
        if current.state != job.state or not current.waiting_reason:
            return job
        out = job_pb2.Job()
        out.CopyFrom(job)
        out.waiting_reason = current.waiting_reason
        return out

    def __call__(self, job: job_pb2.Job) -> None:
        self.job = job
        line = self.describe(job)
        if line != self.last:
            print(line, file=sys.stderr, flush=True)
            self.last = line

    def describe(self, job: job_pb2.Job) -> str:
        """The job's line: id, state, attempt and why it waits."""
        queue = None
        if job.state == job_pb2.JOB_STATE_QUEUED:
            queue = self.queue(job.queue)
            if not job.waiting_reason:
                job = self.explained(job)
        return self.line(job, waiting_reason(job, queue, datetime.now(UTC)))

    def latest(self, job_id: str) -> str:
        """The last line printed, else the job's line as it is now ('' if it cannot be read):
        a deadline may end the wait before the first look at the job."""
        if self.last:
            return self.last
        try:
            return self.describe(self.client.get_job(job_id))
        except JobwheelError:
            return ""

    @staticmethod
    def line(job: job_pb2.Job, reason: str) -> str:
        attempt = f" (attempt {job.attempt})" if job.attempt else ""
        return f"{job.id}: {state_name(job.state)}{attempt}" + (f": {reason}" if reason else "")


def _wait_arguments(p: argparse.ArgumentParser) -> None:
    job_id_argument(p)
    p.add_argument("--timeout", metavar="DURATION", help="give up after this long (exit 1)")


@command("wait", "wait until a job is COMPLETED, FAILED or CANCELLED", _wait_arguments)
def wait(c: Command) -> int:
    job_id = resolve(c.client, c.args.id)
    limit = duration(c.args.timeout)
    progress = Progress(c.client)
    try:
        job = c.client.wait_job(
            job_id,
            timeout=None if limit is None else limit.total_seconds(),
            on_change=progress,
        )
    except DeadlineExceeded:
        latest = progress.latest(job_id)
        still = f" ({latest})" if latest else ""
        print(f"jobwheel: gave up after {c.args.timeout}{still}", file=sys.stderr)
        return 1
    c.show_job(job, pb.GetJobResponse(job=job))
    return 0 if job.state == job_pb2.JOB_STATE_COMPLETED else 5
