"""The `jobwheel` CLI as a real subprocess against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass

import grpc
import pytest
from jobwheel.client import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from jobwheel.client.cli import describe, exit_code
from jobwheel.client.errors import JobwheelError
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.out)
        return value


async def jw(server: str, *args: str, stdin: str | None = None) -> Result:
    """Runs `python -m jobwheel.client.cli` without blocking the loop the server runs on."""
    env = {**os.environ, "JOBWHEEL_SERVER": server}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobwheel.client.cli",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), 60
    )
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def test_enqueue_get_wait_history(server: Running) -> None:
    r = await jw(server.address, "enqueue", "test.echo", "--payload", '{"n": 3}', "-o", "json")
    assert r.code == 0, r.err
    job = r.json()["job"]
    assert isinstance(job, dict) and job["task"] == "test.echo"
    assert job["payload"] == {"n": 3}  # whole numbers stay whole
    job_id = str(job["id"])

    r = await jw(server.address, "wait", job_id, "-o", "json")
    assert r.code == 0, r.err
    assert r.json()["job"]["state"] == "JOB_STATE_COMPLETED"  # type: ignore[index]
    assert "COMPLETED" in r.err  # progress goes to stderr

    r = await jw(server.address, "get", job_id)
    assert r.code == 0
    assert "state:" in r.out and "COMPLETED" in r.out and '"echo":{"n":3}' in r.out

    r = await jw(server.address, "-o", "json", "history", job_id)
    attempts = r.json()["attempts"]
    assert isinstance(attempts, list) and attempts[0]["outcome"] == "ATTEMPT_OUTCOME_SUCCEEDED"
    r = await jw(server.address, "history", job_id)
    assert "SUCCEEDED" in r.out and "1 succeeded" in r.out


async def test_stdin_payload_schedule_and_labels(server: Running) -> None:
    r = await jw(
        server.address,
        "enqueue",
        "test.noop",
        "--payload-file",
        "-",
        "--in",
        "2h",
        "--queue",
        "mail",
        "--label",
        "team=billing",
        "--priority",
        "5",
        "--max-attempts",
        "2",
        "--timeout",
        "90s",
        "--idempotency-key",
        "k-1",
        "-o",
        "json",
        stdin='{"to": "ada@example.com"}',
    )
    assert r.code == 0, r.err
    job = r.json()["job"]
    assert isinstance(job, dict)
    assert job["payload"] == {"to": "ada@example.com"} and job["queue"] == "mail"
    assert job["labels"] == {"team": "billing"} and job["priority"] == 5
    assert job["state"] == "JOB_STATE_SCHEDULED" and job["timeout"] == "90s"
    again = await jw(
        server.address, "enqueue", "test.noop", "--idempotency-key", "k-1", "--in", "2h"
    )
    assert again.code == 0 and job["id"] in again.out and "idempotency key matched" in again.err
    cron = await jw(
        server.address, "enqueue", "test.noop", "--cron", "0 9 * * 1-5", "--tz", "Asia/Tokyo"
    )
    assert cron.code == 0 and "cron '0 9 * * 1-5' Asia/Tokyo" in cron.out


async def test_list_filters_and_pages(server: Running) -> None:
    for i in range(5):
        req = pb.EnqueueJobRequest(task="test.noop", queue="pages", labels={"i": str(i)})
        await server.jobs.EnqueueJob(req)
    await jw(server.address, "enqueue", "other", "--in", "1h", "--payload", '{"customer":"acme"}')
    r = await jw(server.address, "list", "--queue", "pages", "--limit", "2")
    assert r.code == 0 and r.out.startswith("ID") and len(r.out.splitlines()) == 3
    assert "more match" in r.err
    r = await jw(server.address, "list", "--queue", "pages", "--all", "-o", "json")
    assert len(r.json()["jobs"]) == 5  # type: ignore[arg-type]
    r = await jw(server.address, "list", "--label", "i=3", "-o", "json")
    assert [j["labels"] for j in r.json()["jobs"]] == [{"i": "3"}]  # type: ignore[attr-defined]
    r = await jw(server.address, "list", "--where", "customer=acme", "--state", "scheduled,queued")
    assert "other" in r.out and "test.noop" not in r.out
    r = await jw(server.address, "list", "--one-off", "--created-after", "2000-01-01T00:00:00Z")
    assert len(r.out.splitlines()) == 7
    r = await jw(server.address, "list", "--recurring", "-o", "json")
    assert r.json() == {}


async def test_exit_codes(server: Running) -> None:
    r = await jw(server.address, "get", "0190c7f5-0000-7000-8000-000000000000")
    assert r.code == 3 and "not found" in r.err and len(r.err.splitlines()) == 1
    r = await jw(server.address, "enqueue", "", "--cron", "61 * * * *")
    assert r.code == 2 and len(r.err.splitlines()) == 1
    assert "task:" in r.err and "schedule.cron:" in r.err
    r = await jw(server.address, "list", "--state", "bogus")
    assert r.code == 2 and "unknown job state" in r.err
    r = await jw(server.address, "enqueue", "t", "--in", "5 parsecs")
    assert r.code == 2 and "not a duration" in r.err
    r = await jw(server.address, "enqueue", "t", "--payload", "[1]")
    assert r.code == 2 and "JSON object" in r.err
    r = await jw(server.address, "frobnicate")
    assert r.code == 2
    r = await jw("127.0.0.1:1", "get", "0190c7f5-0000-7000-8000-000000000000")
    assert r.code == 1 and "cannot reach the server at 127.0.0.1:1" in r.err
    r = await jw(server.address, "--server", "127.0.0.1:1", "list")
    assert r.code == 1


async def test_wait_on_a_failed_job(server: Running) -> None:
    r = await jw(server.address, "enqueue", "test.boom", "--max-attempts", "1", "-o", "json")
    job_id = str(r.json()["job"]["id"])  # type: ignore[index]
    r = await jw(server.address, "wait", job_id)
    assert r.code == 5 and "FAILED" in r.out and "ValueError: boom" in r.out


async def test_bulk_needs_yes_without_a_terminal(server: Running) -> None:
    r = await jw(server.address, "cancel", "--state", "failed")
    assert r.code == 2 and "--yes" in r.err
    r = await jw(server.address, "delete")
    assert r.code == 2 and "give a job ID, filter flags or --all" in r.err


async def test_bulk_on_every_job_needs_all(server: Running) -> None:
    for n in range(2):
        r = await jw(
            server.address, "enqueue", "test.echo", "--in", "1h", "--payload", f'{{"n": {n}}}'
        )
        assert r.code == 0, r.err
    every_state = [
        arg
        for state in (
            "scheduled",
            "queued",
            "running",
            "retrying",
            "paused",
            "completed",
            "failed",
            "cancelled",
        )
        for arg in ("--state", state)
    ]
    # a filter naming every state matches every job: the server wants `all`
    r = await jw(server.address, "pause", *every_state, "--yes")
    assert r.code == 2 and "matches every job" in r.err, r.err
    r = await jw(server.address, "pause", "--all", "--yes", "-o", "json")
    assert r.code == 0, r.err
    assert r.json() == {"count": "2"}  # int64 is a string in protobuf JSON
    r = await jw(server.address, "resume", *every_state, "--all", "--yes")
    assert r.code == 0 and "resumed 2 jobs" in r.out, r.err
    r = await jw(server.address, "cancel", "0123456789", "--all", "--yes")
    assert r.code == 2 and "--all" in r.err and "no IDs" in r.err


async def test_help_documents_exit_codes() -> None:
    r = await jw("127.0.0.1:1", "--help")
    assert r.code == 0 and "exit codes:" in r.out and "FAILED_PRECONDITION" in r.out


def test_error_descriptions_and_codes() -> None:
    from google.rpc import error_details_pb2 as ed

    bad = InvalidArgument(
        "invalid",
        details=[ed.BadRequest(field_violations=[{"field": "a", "description": "b"}])],
    )
    assert (describe(bad, "h:1"), exit_code(bad)) == ("invalid argument: a: b", 2)
    assert exit_code(NotFound("job 'x' not found")) == 3
    assert describe(NotFound("job 'x' not found"), "h:1") == "job 'x' not found"
    assert exit_code(FailedPrecondition("it is RUNNING")) == 4
    assert (
        describe(FailedPrecondition("it is RUNNING"), "h") == "failed precondition: it is RUNNING"
    )
    assert exit_code(Unavailable("down")) == 1
    assert exit_code(JobwheelError("x", code=grpc.StatusCode.INTERNAL)) == 1


@pytest.mark.parametrize("output", ["table", "json"])
async def test_watch_without_a_terminal_prints_lines(server: Running, output: str) -> None:
    """WatchJobs may not be served yet: then the CLI says so (exit 1) instead of hanging."""
    env = {**os.environ, "JOBWHEEL_SERVER": server.address}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwheel.client.cli", "watch", "-o", output,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    await jw(server.address, "enqueue", "test.noop", "--in", "1h")
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
    if not line:
        pytest.skip("WatchJobs is not implemented by this server")
    text = line.decode()
    if output == "json":
        assert "event" in json.loads(text) or "snapshot_end" in json.loads(text)
    else:
        assert "SNAPSHOT" in text or "ENQUEUED" in text


async def test_get_and_attempts_show_the_traceback(server: Running) -> None:
    r = await jw(server.address, "enqueue", "test.boom", "--max-attempts", "1", "-o", "json")
    job_id = str(r.json()["job"]["id"])  # type: ignore[index]
    await jw(server.address, "wait", job_id, "--interval", "50ms")
    r = await jw(server.address, "get", job_id)
    assert "ValueError: boom" in r.out and "last traceback:" in r.out
    assert 'raise ValueError("boom")' in r.out
    r = await jw(server.address, "history", job_id)
    assert "attempt 1.1 traceback:" in r.out and 'raise ValueError("boom")' in r.out
