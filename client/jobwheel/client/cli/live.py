"""`jobwheel watch`: a table redrawn in place on a terminal, one line per event otherwise."""

from __future__ import annotations

import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime

from jobwheel.client.cli import render
from jobwheel.client.cli.commands import Command, filter_from
from jobwheel.client.errors import JobwheelError
from jobwheel.v1 import job_pb2
from jobwheel.v1 import job_service_pb2 as pb

CLEAR = "\x1b[H\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
# redraws are coalesced: a burst of events costs one frame per interval
FRAME_INTERVAL = 0.1


class LiveTable:
    def __init__(self, server: str) -> None:
        self.server = server
        self.jobs: dict[str, job_pb2.Job] = {}
        self.revision = 0
        self.ready = False  # the snapshot (if any) is complete
        self.dirty = True
        self.last_frame = 0.0

    def apply(self, resp: pb.WatchJobsResponse) -> None:
        kind = resp.WhichOneof("kind")
        if kind == "snapshot_end":
            self.ready, self.dirty = True, True
            self.revision = resp.snapshot_end.revision
        elif kind == "heartbeat":
            self.revision = max(self.revision, resp.heartbeat.revision)
        elif kind == "event":
            job = resp.event.job
            if resp.event.type == job_pb2.JOB_EVENT_TYPE_DELETED:
                self.jobs.pop(job.id, None)
            else:
                self.jobs[job.id] = job
            if resp.event.type != job_pb2.JOB_EVENT_TYPE_SNAPSHOT:
                self.revision = max(self.revision, resp.event.revision)
            self.dirty = True

    def frame(self) -> str:
        size = shutil.get_terminal_size()
        # UUIDv7 ids sort by creation: newest first
        rows = [self.jobs[k] for k in sorted(self.jobs, reverse=True)]
        shown = rows[: max(size.lines - 4, 1)]
        now = datetime.now().strftime("%H:%M:%S")
        head = f"jobwheel watch  {self.server}  {len(rows)} jobs  revision {self.revision}  {now}"
        body = render.jobs_table(shown)
        lines = [head[: size.columns], ""] + [line[: size.columns] for line in body.splitlines()]
        if len(shown) < len(rows):
            lines.append(f"... {len(rows) - len(shown)} more")
        return CLEAR + "\n".join(lines) + "\n"

    def maybe_draw(self) -> None:
        now = time.monotonic()
        if self.ready and self.dirty and now - self.last_frame >= FRAME_INTERVAL:
            sys.stdout.write(self.frame())
            sys.stdout.flush()
            self.dirty, self.last_frame = False, now


def _pump(stream: Iterator[pb.WatchJobsResponse], q: queue.Queue[object]) -> None:
    try:
        for resp in stream:
            q.put(resp)
        q.put(None)
    except BaseException as err:  # handed to the drawing thread, which raises it
        q.put(err)


def _draw_live(stream: Iterator[pb.WatchJobsResponse], table: LiveTable) -> None:
    """The stream is read in a thread so that coalesced changes are drawn on a timer,
    not only when the next message happens to arrive."""
    q: queue.Queue[object] = queue.Queue()
    threading.Thread(target=_pump, args=(stream, q), daemon=True).start()
    while True:
        try:
            item = q.get(timeout=FRAME_INTERVAL)
        except queue.Empty:
            table.maybe_draw()
            continue
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, pb.WatchJobsResponse)
        table.apply(item)
        table.maybe_draw()


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch(c: Command) -> int:
    a = c.args
    live = sys.stdout.isatty() and not c.json
    snapshot = not a.no_snapshot

    def reconnecting(err: JobwheelError, attempt: int) -> None:
        print(f"jobwheel: watch interrupted ({err}); reconnecting", file=sys.stderr)

    stream = c.client.watch_jobs(
        filter_from(a),
        include_snapshot=snapshot,
        since_revision=a.since,
        on_reconnect=reconnecting,
    )
    # a terminated watch still restores the cursor
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        if live:
            sys.stdout.write(HIDE_CURSOR)
            table = LiveTable(c.client.address)
            table.ready = not snapshot
            _draw_live(stream, table)
        else:
            for resp in stream:
                line = render.to_json(resp, indent=None) if c.json else render.event_line(resp)
                print(line, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if live:
            sys.stdout.write(SHOW_CURSOR)
            sys.stdout.flush()
    return 0
