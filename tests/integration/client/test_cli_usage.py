"""The CLI's usage rules through the real `jobwheel` command against a real server: checked
values, job ids and their prefixes, addresses, JSON field names, version, completion,
subscriptions, and why `wait` waits."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from jobwheel.client import server_address
from jobwheel.v1 import job_service_pb2 as pb

from tests.conftest import Running
from tests.integration.client.test_cli import jw


async def test_version_and_did_you_mean() -> None:
    r = await jw("127.0.0.1:1", "--version")
    assert r.code == 0 and r.out.strip().startswith("jobwheel 0.")
    r = await jw("127.0.0.1:1", "lsit")
    assert r.code == 2 and "did you mean 'list'?" in r.err
    r = await jw("127.0.0.1:1", "queue", "pase", "emails")
    assert r.code == 2 and "did you mean 'pause'?" in r.err
    r = await jw("127.0.0.1:1", "xyzzy")
    assert r.code == 2 and "did you mean" not in r.err and "invalid choice" in r.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("list", "--limit", "-5"), "--limit: must be at least 1, not -5"),
        (("list", "--limit", "0"), "--limit: must be at least 1, not 0"),
        (("list", "--limit", "many"), "--limit: not a whole number: 'many'"),
        (("enqueue", "t", "--max-attempts", "0"), "--max-attempts: must be at least 1"),
        (("enqueue", "t", "--every", "1m", "--limit", "-1"), "--limit: must be at least 1"),
        (("preview", "* * * * *", "--count", "-2"), "--count: must be at least 1"),
        (("queue", "update", "q", "--max-concurrency", "-1"), "must be 0 or more, not -1"),
        (("queue", "update", "q", "--max-rate", "nan"), "must be a finite number"),
        (("queue", "update", "q", "--max-rate", "-3"), "must be a finite number"),
        (("watch", "--since", "-1"), "--since: must be 0 or more"),
        (("get", "not-an-id"), "'not-an-id' is not a job id"),
        (("cancel", "zz"), "'zz' is not a job id"),
        (("get", "abc"), "prefix 'abc' is too short"),
        (("get", "01a21285-0000-7000-8000-000000000000-0"), "is not a job id"),
        (("--server", "http://127.0.0.1:5", "list"), "is a URL; the server address is HOST:PORT"),
        (("--server", "host:port", "list"), "is not HOST:PORT"),
        (("subscription", "create", "https://x.example", "--event", "bogus"), "unknown event"),
    ],
)
async def test_bad_values_exit_2(server: Running, args: tuple[str, ...], message: str) -> None:
    r = await jw(server.address, *args)
    assert r.code == 2, (r.out, r.err)
    assert message in r.err, r.err


async def test_job_id_prefixes(server: Running) -> None:
    batch = await server.jobs.BatchEnqueueJobs(
        pb.BatchEnqueueJobsRequest(
            jobs=[pb.EnqueueJobRequest(task="nobody", queue="ids") for _ in range(3)]
        )
    )
    ids = [r.job.id for r in batch.results]
    # a unique prefix (the counter part of UUIDv7 tells jobs of one millisecond apart)
    r = await jw(server.address, "get", ids[1][:23], "-o", "json")
    assert r.code == 0, r.err
    assert r.json()["job"]["id"] == ids[1]  # type: ignore[index]
    r = await jw(server.address, "get", ids[1][:23].replace("-", "").upper(), "-o", "json")
    assert r.code == 0 and r.json()["job"]["id"] == ids[1]  # type: ignore[index]
    # four digits span about 50 days: all three, listed
    r = await jw(server.address, "get", ids[0][:4])
    assert r.code == 2 and f"job id prefix '{ids[0][:4]}' is ambiguous" in r.err
    assert all(f"\n  {i}" in r.err for i in ids), r.err
    r = await jw(server.address, "cancel", ids[2][:23], "--reason", "by prefix", "-o", "json")
    assert r.code == 0 and r.json()["job"]["cancel_reason"] == "by prefix"  # type: ignore[index]
    r = await jw(server.address, "retry", ids[2][:23], "-o", "json")
    assert r.code == 0 and r.json()["job"]["id"] == ids[2]  # type: ignore[index]
    # no job there: like NOT_FOUND
    r = await jw(server.address, "get", "0000aaaa")
    assert r.code == 3 and "no job id starts with '0000aaaa'" in r.err


def test_addresses_without_a_port_get_the_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBWHEEL_SERVER", raising=False)
    assert server_address() == "127.0.0.1:50051"
    assert server_address("127.0.0.1") == "127.0.0.1:50051"
    assert server_address("jobs.internal") == "jobs.internal:50051"
    assert server_address("jobs.internal:7000") == "jobs.internal:7000"
    assert server_address("[::1]") == "[::1]:50051"
    assert server_address("::1") == "[::1]:50051"
    assert server_address("[::1]:7000") == "[::1]:7000"
    assert server_address("dns:///jobs.internal:7000") == "dns:///jobs.internal:7000"
    for url in ("http://127.0.0.1:50051", "https://jobs.internal/"):
        with pytest.raises(ValueError, match="is a URL"):
            server_address(url)


async def test_server_flag_without_a_port_dials_the_default_port() -> None:
    # 127.0.0.2 answers locally and nothing of ours listens there
    r = await jw(
        "127.0.0.1:1", "--server", "127.0.0.2", "get", "0190c7f5-0000-7000-8000-000000000000"
    )
    assert r.code == 1 and "cannot reach the server at 127.0.0.2:50051" in r.err


async def test_json_uses_the_proto_field_names(server: Running) -> None:
    r = await jw(server.address, "enqueue", "test.noop", "--in", "1h", "-o", "json")
    job = r.json()["job"]
    assert isinstance(job, dict)
    assert {"create_time", "next_run_time", "retry_policy"} <= set(job)
    assert "createTime" not in job and job["retry_policy"]["max_attempts"] == 4
    r = await jw(server.address, "preview", "0 9 * * *", "--count", "2", "-o", "json")
    assert all({"time", "local_time"} <= set(t) for t in r.json()["fire_times"])  # type: ignore[union-attr]


async def test_subscriptions(server: Running) -> None:
    secret = "whsec_" + "A" * 32
    r = await jw(
        server.address,
        "subscription", "create", "https://hooks.example.com/x",
        "--event", "completed", "--event", "failed,cancelled", "--secret", secret,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "completed,failed,cancelled" in r.out and secret not in r.out
    r = await jw(server.address, "subscription", "list", "-o", "json")
    (sub,) = r.json()["subscriptions"]  # type: ignore[misc]
    assert sub["url"] == "https://hooks.example.com/x"
    assert sub["event_types"] == [
        "JOB_EVENT_TYPE_COMPLETED", "JOB_EVENT_TYPE_FAILED", "JOB_EVENT_TYPE_CANCELLED",
    ]  # fmt: skip
    r = await jw(server.address, "subscription", "delete", sub["id"])
    assert r.code == 0 and f"deleted {sub['id']}" in r.out
    r = await jw(server.address, "subscription", "list")
    assert r.out.strip() == "ID  EVENTS  CREATED  URL"


async def test_shell_completion(tmp_path: Path) -> None:
    out = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": "jobwheel subs",
        "COMP_POINT": "13",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwheel.client.cli", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert out.read_text().split() == ["subscription"]


# ---- wait: it follows the job and says why it waits ----------------------------------------


async def test_wait_says_why_and_follows_the_job(server: Running) -> None:
    r = await jw(server.address, "enqueue", "nobody.handles.this", "-o", "json")
    job_id = str(r.json()["job"]["id"])  # type: ignore[index]
    r = await jw(server.address, "wait", job_id, "--timeout", "1s")
    assert r.code == 1 and "gave up after 1s" in r.err
    assert (
        f"{job_id}: QUEUED: waiting for a worker: no in-process handler or remote worker has "
        "taken task 'nobody.handles.this' from queue 'default' yet"
    ) in r.err

    r = await jw(server.address, "enqueue", "test.noop", "--in", "2h", "-o", "json")
    job_id = str(r.json()["job"]["id"])  # type: ignore[index]
    r = await jw(server.address, "wait", job_id, "--timeout", "0.5s")
    assert r.code == 1 and f"{job_id}: SCHEDULED: scheduled for " in r.err
    assert "(in 1h59m)" in r.err or "(in 2h00m)" in r.err


async def test_a_wait_that_gives_up_at_once_still_says_where_the_job_is(server: Running) -> None:
    r = await jw(server.address, "enqueue", "test.noop", "--in", "2h", "-o", "json")
    job_id = str(r.json()["job"]["id"])  # type: ignore[index]
    r = await jw(server.address, "wait", job_id, "--timeout", "1ms")
    assert r.code == 1
    assert r.err.startswith(f"jobwheel: gave up after 1ms ({job_id}: SCHEDULED: scheduled for ")


async def test_wait_on_a_paused_queue_reports_it(server: Running) -> None:
    await server.jobs.PauseQueue(pb.PauseQueueRequest(name="held"))
    r = await jw(server.address, "enqueue", "test.noop", "--queue", "held", "-o", "json")
    job_id = str(r.json()["job"]["id"])  # type: ignore[index]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobwheel.client.cli", "wait", job_id[:23], "--timeout", "30s",
        env={**os.environ, "JOBWHEEL_SERVER": server.address},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    # wait says why it waits before the job may run
    first = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    assert first == f"{job_id}: QUEUED: queue 'held' is paused (jobwheel queue resume held)\n"
    await server.jobs.ResumeQueue(pb.ResumeQueueRequest(name="held"))
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert err.decode().splitlines()[-1] == f"{job_id}: COMPLETED (attempt 1)"
    assert "state:" in out.decode() and "COMPLETED" in out.decode()
