"""The README's examples ("Try it with grpcurl" and "Command line"), run as printed.

Every code block of those sections is preceded by `<!-- example: NAME -->` (or
`<!-- example: NAME, not run: WHY -->`); each block runs (sh in bash, python in the venv's
python) against a real server subprocess with the README tasks' handlers, its address
substituted for 127.0.0.1:50051 (and in $JOBWHEEL_SERVER), with .venv/bin on PATH, and its
output is checked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.process import BIN, ROOT, ServerProcess

README_ADDRESS = "127.0.0.1:50051"
SECTIONS = ("Try it with grpcurl", "Command line", "A worker in Python")
MARKER = re.compile(r"<!-- example: ([\w-]+)(, not run: [^>]+)? -->\n```(\w+)\n(.*?)```", re.S)
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
Json = dict[str, Any]


@dataclass(frozen=True)
class Example:
    name: str
    lang: str
    body: str
    run: bool


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def examples() -> dict[str, Example]:
    found: dict[str, Example] = {}
    for title in SECTIONS:
        for name, not_run, lang, body in MARKER.findall(section(title)):
            assert name not in found, f"two README examples named {name!r}"
            found[name] = Example(name, lang, body, run=not not_run)
    return found


def example(name: str, lang: str = "sh") -> str:
    ex = examples()[name]
    assert ex.run and ex.lang == lang, ex
    return ex.body


# ---- running blocks -------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


def shell_env(address: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "JOBWHEEL_SERVER": address,
    }


def bash(script: str, address: str, *, errexit: bool = True) -> list[str]:
    flags = "-euo" if errexit else "-uo"
    return ["bash", flags, "pipefail", "-c", script.replace(README_ADDRESS, address)]


def run_sh(script: str, address: str, *, errexit: bool = True) -> Result:
    proc = subprocess.run(
        bash(script, address, errexit=errexit),
        capture_output=True,
        text=True,
        env=shell_env(address),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def commands(script: str) -> list[tuple[str, int | None]]:
    """The block's commands (continuation lines joined), each with the `# exit N` it states."""
    out: list[tuple[str, int | None]] = []
    for logical in re.sub(r"\\\n", " ", script).splitlines():
        command, _, comment = logical.partition("  #")
        if command.strip() and not command.lstrip().startswith("#"):
            stated = re.search(r"exit (\d+)", comment)
            out.append((command.strip(), int(stated.group(1)) if stated else None))
    return out


class Streaming:
    """A long-running block (a watch): its stdout collected as it comes."""

    def __init__(self, argv: list[str], address: str) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=shell_env(address),
            cwd=ROOT,
            start_new_session=True,  # its own process group, for the Ctrl-C
        )
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._chunks.append(line)

    @property
    def out(self) -> str:
        return "".join(self._chunks)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.out):
                return self.out
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"not seen in time; output so far:\n{self.out}\n{self.stderr()}")

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float = 15.0) -> Result:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return Result(code, self.out, self.stderr())

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def contains(text: str) -> Callable[[str], bool]:
    return lambda out: text in out


def json_documents(text: str) -> list[Json]:
    """The pretty-printed JSON documents in `text` (each starts with a line that is `{`)."""
    decoder = json.JSONDecoder()
    docs: list[Json] = []
    pos = 0
    while (start := text.find("{", pos)) >= 0:
        if (start > 0 and text[start - 1] != "\n") or text[start + 1 : start + 2] != "\n":
            pos = start + 1
            continue
        doc, pos = decoder.raw_decode(text, start)
        docs.append(doc)
    return docs


def one_line_json(text: str) -> list[Json]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def field(text: str, name: str) -> list[str]:
    """The values of `name:` lines of the CLI's job detail output."""
    return re.findall(rf"^{re.escape(name)}:\s+(.*)$", text, re.M)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """The server of the README, with trivial handlers for its tasks."""
    proc = ServerProcess(
        f"sqlite:///{tmp_path / 'jobwheel.db'}",
        tmp_path / "server.log",
        "--handlers",
        "examples.handlers",
    )
    try:
        yield proc.start()
    finally:
        proc.stop()


def enqueue(address: str, task: str, payload: Json, *extra: str) -> Json:
    """A job enqueued with the CLI, as another terminal would (returns the job)."""
    result = run_sh(
        " ".join(["jobwheel enqueue", task, "--payload", f"'{json.dumps(payload)}'", *extra])
        + " -o json",
        address,
    )
    assert result.code == 0, result.err
    job: Json = json.loads(result.out)["job"]
    return job


# ---- the README's structure -----------------------------------------------------------------

RUN_BY_TESTS = {
    "grpcurl",
    "grpcurl-watch",
    "grpcurl-errors",
    "buf-curl",
    "cli",
    "cli-watch",
    "cli-errors",
    "python-client",
    "worker",
}


def test_every_example_block_is_marked_and_run() -> None:
    for title in SECTIONS:
        text = section(title)
        marked = {body for *_, body in MARKER.findall(text)}
        for lang, body in FENCE.findall(text):
            assert body in marked, f"unmarked {lang} block in README section {title!r}:\n{body}"
    found = examples()
    assert {n for n, ex in found.items() if ex.run} == RUN_BY_TESTS
    # only a few are illustrative
    assert sorted(n for n, ex in found.items() if not ex.run) == ["serve"]


def test_serve_example_is_the_server_the_tests_run() -> None:
    serve = examples()["serve"].body
    assert 'make serve ARGS="--handlers examples.handlers"' in serve


# ---- grpcurl --------------------------------------------------------------------------------


def test_grpcurl_examples(server: ServerProcess) -> None:
    result = run_sh(example("grpcurl"), server.address)
    assert result.code == 0, result.err
    out = result.out

    services = set(out[: out.index(" is a service:")].split())
    assert {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "jobwheel.v1.JobService",
        "jobwheel.v1.WorkerService",
    } <= services
    assert (
        "rpc WatchJobs ( .jobwheel.v1.WatchJobsRequest ) "
        "returns ( stream .jobwheel.v1.WatchJobsResponse );" in out
    )
    assert "message EnqueueJobRequest {" in out and "string task = " in out
    assert "message Job {" in out and "string cancel_reason = " in out

    report, digest, got, listed, cancelled, health = json_documents(out)
    assert report["job"]["task"] == "send_report"
    assert report["job"]["state"] == "JOB_STATE_SCHEDULED"
    assert report["job"]["labels"] == {"team": "billing"}
    assert digest["job"]["schedule"]["cron"] == "0 9 * * *"
    assert digest["job"]["schedule"]["time_zone"] == "America/New_York"
    assert digest["job"]["next_run_time"].endswith(("13:00:00Z", "14:00:00Z"))  # 09:00 EDT/EST

    assert got["job"]["task"] == "send_email"
    assert got["job"]["payload"] == {"to": "ada@example.com"}
    assert got["job"]["state"] in {"JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_COMPLETED"}

    assert [j["id"] for j in listed["jobs"]] == [report["job"]["id"]]

    assert cancelled["job"]["task"] == "send_report"
    assert cancelled["job"]["id"] != report["job"]["id"]
    assert cancelled["job"]["state"] == "JOB_STATE_CANCELLED"
    assert cancelled["job"]["cancel_reason"] == "customer left"
    assert health == {"status": "SERVING"}


def test_grpcurl_watch_streams_snapshot_then_live_events(server: ServerProcess) -> None:
    before = enqueue(server.address, "send_email", {"to": "ada@example.com"})
    later = enqueue(server.address, "send_email", {"to": "bob@example.com"}, "--in", "1h")
    enqueue(server.address, "send_report", {})  # another task: not in the stream

    watch = Streaming(bash(example("grpcurl-watch"), server.address), server.address)
    try:
        watch.wait_for(lambda out: '"snapshot_end"' in out)
        live = enqueue(server.address, "send_email", {"to": "cy@example.com"})
        watch.wait_for(lambda out: "JOB_EVENT_TYPE_COMPLETED" in out.split('"snapshot_end"')[1])
        result = watch.finish()
    finally:
        watch.stop()

    # -max-time ends the stream: DeadlineExceeded, exit code 64 + 4
    assert result.code == 68, result.err
    assert "Code: DeadlineExceeded" in result.err
    messages = json_documents(result.out)
    end = next(i for i, m in enumerate(messages) if "snapshot_end" in m)
    snapshot, changes = messages[:end], messages[end + 1 :]
    assert {m["event"]["type"] for m in snapshot} == {"JOB_EVENT_TYPE_SNAPSHOT"}
    assert {m["event"]["job"]["id"] for m in snapshot} == {before["id"], later["id"]}
    assert int(messages[end]["snapshot_end"]["revision"]) >= max(
        int(m["event"]["revision"]) for m in snapshot
    )
    events = [m["event"] for m in changes if "event" in m]
    assert all(e["job"]["task"] == "send_email" for e in events)
    assert [e["type"] for e in events if e["job"]["id"] == live["id"]] == [
        "JOB_EVENT_TYPE_ENQUEUED",
        "JOB_EVENT_TYPE_STARTED",
        "JOB_EVENT_TYPE_COMPLETED",
    ]
    revisions = [int(e["revision"]) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > int(
        messages[end]["snapshot_end"]["revision"]
    )


def test_grpcurl_errors_print_the_rich_details(server: ServerProcess) -> None:
    bad, unknown = (run_sh(cmd, server.address) for cmd, _ in commands(example("grpcurl-errors")))

    assert bad.code == 64 + 3, bad.err
    assert "Code: InvalidArgument" in bad.err
    details = json.loads(bad.err.split("1)\t", 1)[1].splitlines()[0])
    assert details["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in details["field_violations"]] == ["task", "schedule.cron"]

    assert unknown.code == 64 + 5, unknown.err
    assert "Code: NotFound" in unknown.err
    details = json.loads(unknown.err.split("1)\t", 1)[1].splitlines()[0])
    assert details["@type"] == "type.googleapis.com/google.rpc.ResourceInfo"
    assert details["resource_type"] == "job"
    assert details["resource_name"] == "01a21285-0000-7000-8000-000000000000"


def test_buf_curl_examples(server: ServerProcess) -> None:
    result = run_sh(example("buf-curl"), server.address)
    assert result.code == 0, result.err
    methods = result.out.split("{", 1)[0].split()
    for rpc in ("EnqueueJob", "GetJob", "ListJobs", "WatchJobs"):
        assert f"jobwheel.v1.JobService/{rpc}" in methods

    got, listed = json_documents(result.out)
    job = got["job"]
    assert job["task"] == "send_email" and job["payload"] == {"to": "ada@example.com"}
    assert "createTime" in job and "retryPolicy" in job  # buf curl: camelCase JSON names
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]


# ---- the jobwheel CLI -----------------------------------------------------------------------


def test_cli_examples(server: ServerProcess) -> None:
    result = run_sh(example("cli"), server.address)
    assert result.code == 0, result.err
    out = result.out

    # the enqueue tables: ada's job and the report
    assert field(out, "task")[:2] == ["send_email", "send_report"]
    assert field(out, "labels")[0] == "team=billing"
    assert field(out, "idempotency key") == ["report-2030-01"]
    assert field(out, "timeout") == ["2m00s"]
    assert "2030-01-31 09:00:00Z" in field(out, "next run")
    assert field(out, "priority")[1] == "5"

    # inspect: get, the filtered list (ada's job alone), the 2030 job as JSON, stats
    assert field(out, "payload")[2] == '{"to":"bob@example.com"}'
    rows = [line.split() for line in out.splitlines() if UUID.match(line)]
    assert [(r[1], r[2]) for r in rows if r[1] != "completed,failed"] == [("send_email", "emails")]
    (report_list,) = (doc for doc in json_documents(out) if "jobs" in doc)
    assert [j["task"] for j in report_list["jobs"]] == ["send_report"]
    assert "total: 2" in out

    # manage: pause, resume, reschedule, cancel, bulk retry, wait, history, delete
    states = field(out, "state")
    assert states[3:8] == ["PAUSED", "SCHEDULED", "SCHEDULED", "CANCELLED", "COMPLETED"]
    assert field(out, "cancel reason") == ["customer left"]
    assert "retried 1 job\n" in out
    assert re.search(r"^\S+: COMPLETED \(attempt 1\)$", result.err, re.M)  # wait's progress
    assert field(out, "result")[0] == '{"sent_to":"bob@example.com"}'
    assert re.search(r"^1\s+1\s+SUCCEEDED\s", out, re.M)  # history
    assert re.search(rf"^deleted {UUID.pattern[1:]}", out, re.M)
    # trigger: the digest runs now, its cron stays
    assert states[8] in {"QUEUED", "RUNNING"}
    assert "cron '0 9 * * *' America/New_York" in field(out, "schedule")[-1]

    # queues: the pause and the new limit show; preview: Paris time on weekdays
    assert re.search(r"^emails\s+yes\s+4\s", out, re.M)
    assert re.search(r"^emails\s+no\s+4\s", out, re.M)
    fires = re.findall(r"^(\S+ \S+Z)\s+(\S+ \S+)$", out, re.M)
    assert len(fires) == 5 and all(" 09:00:00+0" in local for _, local in fires)  # one format

    # subscriptions: the new one is listed, its generated secret printed once
    assert re.search(r"^secret: whsec_\S+", out, re.M)
    listed = re.findall(r"^(\S+)\s+completed,failed\s+\S+ \S+Z\s+(\S+)$", out, re.M)
    assert [url for _, url in listed] == ["https://hooks.example.com/jobs"] * 2


def test_cli_watch_until_ctrl_c(server: ServerProcess) -> None:
    before = enqueue(server.address, "send_email", {"to": "ada@example.com"}, "--queue", "emails")
    enqueue(server.address, "send_email", {"to": "bob@example.com"})  # queue default: not shown

    watch = Streaming(bash(example("cli-watch"), server.address), server.address)
    try:
        watch.wait_for(lambda out: "SNAPSHOT_END" in out)
        live = enqueue(server.address, "send_email", {"to": "cy@example.com"}, "--queue", "emails")
        watch.wait_for(lambda out: f"COMPLETED\t{live['id']}" in out)
        watch.ctrl_c()
        result = watch.finish()
    finally:
        watch.stop()

    assert result.code == 0, result.err  # Ctrl-C is the normal end of a watch
    lines = [line.split("\t") for line in result.out.splitlines()]
    assert [line[1:3] for line in lines[:2]] == [["SNAPSHOT", before["id"]], ["SNAPSHOT_END"]]
    assert [line[1] for line in lines[2:] if line[2:3] == [live["id"]]] == [
        "ENQUEUED",
        "STARTED",
        "COMPLETED",
    ]
    assert all(line[4] == "emails" for line in lines if len(line) > 4)


def test_cli_errors_exit_codes_and_messages(server: ServerProcess) -> None:
    stated = commands(example("cli-errors"))
    assert [code for _, code in stated] == [2, 3, 2, 2, 2]
    (bad, _), (unknown, _), (not_an_id, _), (typo, _), (negative, _) = stated

    result = run_sh(bad, server.address)
    assert result.code == 2
    assert result.err.startswith("jobwheel: invalid argument: schedule.cron: ")

    result = run_sh(unknown, server.address)
    assert result.code == 3
    assert result.err == "jobwheel: job '01a21285-0000-7000-8000-000000000000' not found\n"

    result = run_sh(not_an_id, server.address, errexit=False)
    assert result.code == 2 and result.err.startswith("jobwheel: 'job-42' is not a job id"), result
    result = run_sh(typo, server.address, errexit=False)
    assert result.code == 2 and "did you mean 'list'?" in result.err, result
    result = run_sh(negative, server.address, errexit=False)
    assert result.code == 2 and "--limit: must be at least 1, not -5" in result.err, result


# ---- the Python client ----------------------------------------------------------------------


def test_python_client_example(server: ServerProcess) -> None:
    script = example("python-client", "python").replace(README_ADDRESS, server.address)
    run = Streaming([str(BIN / "python"), "-c", script], server.address)
    try:
        run.wait_for(lambda out: "not found:" in out)
        # the watch has no snapshot: enqueue until one lands after it opened
        for _ in range(20):
            live = enqueue(server.address, "send_email", {"to": "cy@example.com"})
            try:
                run.wait_for(contains(f"ENQUEUED {live['id']}"), timeout=1)
                break
            except AssertionError:
                continue
        run.wait_for(lambda out: f"JOB_EVENT_TYPE_COMPLETED {live['id']}" in out)
        run.ctrl_c()
        result = run.finish()
    finally:
        run.stop()

    assert result.code == -signal.SIGINT, result.err  # Python's exit on an unhandled Ctrl-C
    lines = result.out.splitlines()
    assert re.fullmatch(rf"enqueued {UUID.pattern[1:]} JOB_STATE_SCHEDULED", lines[0])
    assert lines[1] == "not found: job '01a21285-0000-7000-8000-000000000000' not found"
    assert [line for line in lines if live["id"] in line] == [
        f"JOB_EVENT_TYPE_{event} {live['id']} JOB_STATE_{state}"
        for event, state in (
            ("ENQUEUED", "QUEUED"),
            ("STARTED", "RUNNING"),
            ("COMPLETED", "COMPLETED"),
        )
    ]


# ---- the worker SDK -------------------------------------------------------------------------


def test_worker_example(server: ServerProcess) -> None:
    result = run_sh(example("worker"), server.address)
    assert result.code == 0, result.err
    done = json.loads(run_sh("jobwheel list --task resize_image -o json", server.address).out)
    (job,) = done["jobs"]
    assert job["state"] == "JOB_STATE_COMPLETED"
    assert job["result"] == {"url": f"https://img.example.com/{job['id']}-640.png"}
    # the worker says where it connects and what it serves, and that it drains on SIGTERM
    assert (
        f"server {server.address}, queues images, tasks resize_image, concurrency 4" in result.err
    )
    assert "SIGTERM: stopping; draining 0 running job(s), 30s grace" in result.err
    assert re.search(r"worker \S+ stopped", result.err)
    # wait followed it (the worker is quick: it may have finished before wait started)
    assert re.search(rf"^{job['id']}: COMPLETED \(attempt 1\)$", result.err, re.M)
