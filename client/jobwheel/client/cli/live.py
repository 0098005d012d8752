"""`jobwheel watch`: a live table on a terminal (rich), one line per event otherwise.

The live view keeps its title on screen however many jobs match (rows that do not fit are
counted, not drawn), redraws on a timer so its clock ticks while nothing happens, and shows
a lost connection as one status line, which clears when the stream is back.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from jobwheel.client.cli import render
from jobwheel.client.cli.base import Command, command, count_int, filter_from
from jobwheel.client.convert import from_timestamp
from jobwheel.client.errors import JobwheelError, ResourceExhausted, Unavailable
from jobwheel.client.filters import state_name
from jobwheel.client.policy import events_of
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    job_pb2.JOB_STATE_SCHEDULED: "blue",
    job_pb2.JOB_STATE_QUEUED: "cyan",
    job_pb2.JOB_STATE_RUNNING: "bold yellow",
    job_pb2.JOB_STATE_RETRYING: "magenta",
    job_pb2.JOB_STATE_COMPLETED: "green",
    job_pb2.JOB_STATE_FAILED: "bold red",
    job_pb2.JOB_STATE_CANCELLED: "dim",
    job_pb2.JOB_STATE_PAUSED: "yellow",
}
REFRESH_PER_SECOND = 4
CHROME_LINES = 4  # title, status or blank, table header, "more" line


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LiveView:
    """The jobs a watch stream describes, and the frame that shows them."""

    def __init__(self, server: str, snapshot: bool) -> None:
        self.server = server
        self.jobs: dict[str, job_pb2.Job] = {}
        self.incoming: dict[str, job_pb2.Job] | None = {} if snapshot else None
        self.revision = 0
        self.status = ""  # a lost connection, shown until the stream is back
        self.lock = threading.Lock()

    def restart(self, snapshot: bool) -> None:
        """A new stream begins; with a snapshot, it replaces the table at its end."""
        with self.lock:
            self.incoming = {} if snapshot else None

    def lost(self, err: JobwheelError, failures: int) -> None:
        with self.lock:
            detail = " ".join(err.message.split())
            self.status = f"connection lost; reconnecting, attempt {failures} ({detail})"

    def apply(self, resp: pb.WatchJobsResponse) -> None:
        with self.lock:
            self.status = ""
            kind = resp.WhichOneof("kind")
            if kind == "snapshot_end":
                self.jobs, self.incoming = self.incoming or {}, None
                self.revision = max(self.revision, resp.snapshot_end.revision)
            elif kind == "heartbeat":
                self.revision = max(self.revision, resp.heartbeat.revision)
            for event in events_of(resp):
                target = self.incoming if self.incoming is not None else self.jobs
                if event.type == job_pb2.JOB_EVENT_TYPE_DELETED:
                    target.pop(event.job.id, None)
                else:
                    target[event.job.id] = event.job
                if event.type != job_pb2.JOB_EVENT_TYPE_SNAPSHOT:
                    self.revision = max(self.revision, event.revision)

    def frame(self, height: int, now: datetime | None = None) -> RenderableType:
        now = now or datetime.now(UTC)
        with self.lock:
            rows = [self.jobs[k] for k in sorted(self.jobs, reverse=True)]  # UUIDv7: newest first
            loading = self.incoming is not None and not self.jobs
            status = self.status
        clock = now.astimezone().strftime("%H:%M:%S")
        title = Text.assemble(
            ("jobwheel watch", "bold"),
            f"  {self.server}  {len(rows)} jobs  revision {self.revision}  ",
            (clock, "bold"),
        )
        line2 = Text(status, style="bold red") if status else Text("loading..." if loading else "")
        for text in (title, line2):
            text.no_wrap, text.overflow = True, "ellipsis"
        room = max(height - CHROME_LINES, 1)
        shown = rows[:room]
        parts: list[RenderableType] = [title, line2, self._table(shown, now)]
        if len(shown) < len(rows):
            parts.append(Text(f"... {len(rows) - len(shown)} more", style="dim"))
        return Group(*parts)

    @staticmethod
    def _table(jobs: list[job_pb2.Job], now: datetime) -> Table:
        t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for name, ratio in (
            ("ID", None), ("TASK", None), ("QUEUE", None), ("STATE", None),
            ("ATTEMPT", None), ("TIME", None), ("PROGRESS / LAST ERROR", 1),
        ):  # fmt: skip
            t.add_column(name, no_wrap=True, overflow="ellipsis", ratio=ratio)
        for j in jobs:
            t.add_row(
                j.id,
                j.task,
                j.queue,
                Text(state_name(j.state), style=STATE_STYLES.get(j.state, "")),
                str(j.attempt),
                _time_cell(j, now),
                _detail(j),
            )
        return t


def _time_cell(j: job_pb2.Job, now: datetime) -> str:
    """Running jobs: how long the attempt has run; waiting ones: when they run next."""
    started = from_timestamp(j.start_time)
    if j.state == job_pb2.JOB_STATE_RUNNING and started is not None:
        return f"running {elapsed((now - started).total_seconds())}"
    if j.state in (job_pb2.JOB_STATE_SCHEDULED, job_pb2.JOB_STATE_RETRYING):
        return f"next {render.when(j.next_run_time)}"
    ended = from_timestamp(j.end_time)
    return f"ended {render.when(j.end_time)}" if ended is not None else ""


def _detail(j: job_pb2.Job) -> Text:
    if j.HasField("progress") and j.state == job_pb2.JOB_STATE_RUNNING:
        return Text(render.compact(j.progress))
    if j.last_error:
        return Text(j.last_error.splitlines()[0], style="red")
    return Text("")


def _follow(c: Command, view: LiveView, failed: list[BaseException]) -> None:
    """Reads the stream into the view; reconnects (a fresh snapshot each time) until stopped."""
    a = c.args
    snapshot, since = not a.no_snapshot, a.since
    failures = 0
    try:
        while True:
            view.restart(snapshot)
            stream = c.client.watch_jobs(
                filter_from(a), include_snapshot=snapshot, since_revision=since, heartbeats=True
            )
            try:
                for resp in stream:
                    failures = 0
                    view.apply(resp)
            except (Unavailable, ResourceExhausted) as err:  # gone, or fell behind: start over
                failures += 1
                view.lost(err, failures)
                time.sleep(c.client.retry.delay(failures))
            if not snapshot:
                since = view.revision
    except BaseException as err:  # handed to the drawing thread, which raises it
        failed.append(err)


def _live(c: Command) -> None:
    console = Console()
    view = LiveView(c.client.address, snapshot=not c.args.no_snapshot)
    c.client.watch_reconnects = 0  # the view reconnects itself, to show it and re-snapshot
    failed: list[BaseException] = []
    threading.Thread(target=_follow, args=(c, view, failed), daemon=True).start()
    with Live(
        get_renderable=lambda: view.frame(console.size.height),
        console=console,
        refresh_per_second=REFRESH_PER_SECOND,
        vertical_overflow="crop",
    ):
        while not failed:
            time.sleep(1 / REFRESH_PER_SECOND)
    raise failed[0]


def _lines(c: Command, stream: Any) -> None:
    for resp in stream:
        line = render.to_json(resp, indent=None) if c.json else render.event_line(resp)
        print(line, flush=True)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-snapshot", action="store_true", help="only changes, not the current jobs")
    p.add_argument(
        "--since",
        type=count_int,
        default=0,
        metavar="REVISION",
        help="replay changes after this revision",
    )


@command(
    "watch",
    "follow jobs live (a table on a terminal, one line per event otherwise)",
    _watch_arguments,
    filters=True,
)
def watch(c: Command) -> int:
    a = c.args
    signal.signal(signal.SIGTERM, _sigterm)  # a terminated watch still restores the terminal
    try:
        if sys.stdout.isatty() and not c.json:
            _live(c)
        else:

            def reconnecting(err: JobwheelError, attempt: int) -> None:
                print(f"jobwheel: watch interrupted ({err}); reconnecting", file=sys.stderr)

            _lines(
                c,
                c.client.watch_jobs(
                    filter_from(a),
                    include_snapshot=not a.no_snapshot,
                    since_revision=a.since,
                    on_reconnect=reconnecting,
                ),
            )
    except KeyboardInterrupt:
        return 0
    return 0
