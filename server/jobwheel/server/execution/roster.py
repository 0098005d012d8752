"""Who runs jobs (ListWorkers) and whether a QUEUED job has anyone to run it.

Remote workers are noted in memory at each lease and heartbeat and written to the shared
workers table every `flush_every` seconds (one transaction for all of them), together with
this replica's own row (its in-process handlers), so ListWorkers on any replica sees every
worker. A worker's asks are written only when they changed since this replica wrote them
(or another replica wrote the row since, or the row was pruned); otherwise a flush only moves
its last_seen. A worker heard from here only in heartbeats and reports (it leases through
another replica) has asks this replica does not know: it only moves the stored row's
last_seen, never writes asks for it, and counts it as serving nothing itself. A flush reads
back every row but those of the workers it holds. Rows unseen for FORGET_AFTER are deleted.

Memory and the table stay bounded whatever callers do (a worker that takes a new id at every
call, say): a replica remembers at most MAX_REMOTE_WORKERS remote workers and ASKS_BUDGET bytes
of distinct asks (identical asks are held once), forgetting the least recently seen first, and
the table keeps at most MAX_WORKER_ROWS remote rows and TABLE_ASKS_BUDGET characters of asks
in them (each row holds its own copy), the most recently seen; a flush writes no more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from jobwheel.server import model
from jobwheel.server.clock import Clock
from jobwheel.server.storage import Store
from jobwheel.server.storage.workers import WorkerRow, stored_size

log = logging.getLogger(__name__)
REMOTE = "remote"
SERVER = "server"
# a QUEUED job nobody asked for within this long says so (Job.waiting_reason)
NO_WORKER_AFTER = 60 * model.SECOND
FORGET_AFTER = 7 * 86_400 * model.SECOND
MAX_REMOTE_WORKERS = 10_000  # remembered by one replica
ASKS_BUDGET = 64 * 1024 * 1024  # bytes of distinct queue and task lists held by one replica
MAX_WORKER_ROWS = 10_000  # remote rows in the shared table
TABLE_ASKS_BUDGET = 64 * 1024 * 1024  # characters of asks (JSON) in the table's remote rows
_ASK_OVERHEAD = 64  # bytes a held name costs beyond its characters (str header, tuple slot)

Asks = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(slots=True)
class _SharedAsks:
    """One distinct pair of asks, held once for every worker asking the same."""

    asks: Asks
    stored: int  # characters of its JSON as stored in a row (TABLE_ASKS_BUDGET)
    holders: int = 0

    @property
    def size(self) -> int:
        return sum(len(name) + _ASK_OVERHEAD for names in self.asks for name in names)


@dataclass(slots=True)
class _Remote:
    """A remote worker as this replica last saw it."""

    row: WorkerRow
    held: _SharedAsks  # row.queues and row.tasks
    # this replica wrote these asks to the table (record_workers checks nobody wrote since)
    written: bool = False
    # False for a worker only heard from in heartbeats and reports here (it leases through
    # another replica): its row's asks are empty here, not what it asked for
    asks_known: bool = True


class Roster:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        server_id: str,
        handler_tasks: Collection[str],
        *,
        version: str = "",
        flush_every: float = 5.0,
        after_flush: Callable[[Callable[[str, str], bool]], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.server_id = server_id
        self.handler_tasks = tuple(sorted(handler_tasks))
        self.version = version
        self.flush_every = flush_every
        self.started = clock.now()
        # remote workers seen here, least recently seen first
        self._local: dict[str, _Remote] = {}
        self._asks: dict[Asks, _SharedAsks] = {}
        self._asks_bytes = 0
        self._dirty: set[str] = set()
        # the table's rows as of the last flush but the remote ones _local holds
        self._known: list[WorkerRow] = []
        # given `unserved` after each flush (the metrics count jobs without a worker)
        self.after_flush = after_flush

    # -- what this replica sees -------------------------------------------------------------

    def leased(self, worker_id: str, queues: Collection[str], tasks: Collection[str]) -> None:
        """A remote worker asked for jobs of `queues` (empty: any) and `tasks` (empty: any)."""
        held = self._hold((tuple(sorted(queues)), tuple(sorted(tasks))))
        seen = self._local.get(worker_id)
        if seen is not None and seen.asks_known and seen.held is held:  # as a heartbeat
            self._release(held)
            self.touched(worker_id)
            return
        self._forget(worker_id)
        row = WorkerRow(worker_id, REMOTE, self.clock.now(), *held.asks, server=self.server_id)
        self._remember(_Remote(row, held))

    def touched(self, worker_id: str) -> None:
        """A heartbeat or report: the worker is alive (its asks are unchanged)."""
        seen = self._local.pop(worker_id, None)
        now = self.clock.now()
        if seen is None:
            row = WorkerRow(worker_id, REMOTE, now, server=self.server_id)
            seen = _Remote(row, self._hold(((), ())), asks_known=False)
        else:
            seen.row = replace(seen.row, last_seen=now)
        self._remember(seen)

    def _remember(self, seen: _Remote) -> None:
        """Adds `seen` as the most recently seen (its asks already held), then forgets the least
        recently seen workers while past a bound (never `seen` itself)."""
        self._local[seen.row.id] = seen
        self._dirty.add(seen.row.id)
        while len(self._local) > 1 and (
            len(self._local) > MAX_REMOTE_WORKERS or self._asks_bytes > ASKS_BUDGET
        ):
            self._forget(next(iter(self._local)))

    def _hold(self, asks: Asks) -> _SharedAsks:
        """The held copy of `asks` (shared by every worker asking the same), counted once more."""
        held = self._asks.get(asks)
        if held is None:
            held = self._asks[asks] = _SharedAsks(asks, stored_size(*asks))
            self._asks_bytes += held.size
        held.holders += 1
        return held

    def _release(self, held: _SharedAsks) -> None:
        held.holders -= 1
        if held.holders == 0:
            del self._asks[held.asks]
            self._asks_bytes -= held.size

    def _forget(self, worker_id: str) -> None:
        seen = self._local.pop(worker_id, None)
        if seen is not None:
            self._dirty.discard(worker_id)
            self._release(seen.held)

    def _own_row(self) -> WorkerRow:
        return WorkerRow(
            self.server_id,
            SERVER,
            self.clock.now(),
            tasks=self.handler_tasks,
            info={"version": self.version},
        )

    # -- the shared table -----------------------------------------------------------------

    async def flush(self) -> None:
        sent = self._to_record()
        unwritten = await self.store.record_workers(
            [self._own_row(), *(s.row for s in sent)],
            unchanged={s.row.id for s in sent if s.written},
            asks_unknown={s.row.id for s in sent if not s.asks_known},
        )
        for seen in sent:
            seen.written = True
        # heard from here, asked elsewhere, not stored yet: tried again at the next flush
        self._dirty.update(unwritten)
        now = self.clock.now()
        stale = now - 2 * NO_WORKER_AFTER
        # remote workers not seen here for a while need no memory here
        for worker_id in [w for w, s in self._local.items() if s.row.last_seen < stale]:
            self._forget(worker_id)
        # every row but those of the workers it holds (fresher in _local)
        self._known = await self.store.list_workers(stale, omit=(self.server_id, self._local))

    def _to_record(self) -> list[_Remote]:
        """The workers seen since the last flush, the most recently seen first, up to what
        the table keeps (the rest would be pruned at once)."""
        sent: list[_Remote] = []
        size = 0
        for worker_id in reversed(self._local):  # the most recently seen first
            if worker_id not in self._dirty:
                continue
            seen = self._local[worker_id]
            size += seen.held.stored
            if len(sent) >= MAX_WORKER_ROWS or size > TABLE_ASKS_BUDGET:
                break
            sent.append(seen)
        self._dirty.clear()
        return sent

    async def run(self) -> None:
        while True:
            try:
                await self.flush()
                await self.store.forget_workers(
                    self.clock.now() - FORGET_AFTER,
                    keep_remote=MAX_WORKER_ROWS,
                    keep_asks=TABLE_ASKS_BUDGET,
                )
                if self.after_flush is not None:
                    self.after_flush(self.unserved)
            except Exception:
                log.exception("recording workers failed; retrying")
            await asyncio.sleep(self.flush_every)

    async def leave(self) -> None:
        """This replica stops: its row goes (its in-process handlers run no more)."""
        await self.store.remove_worker(self.server_id)

    async def workers(self, seen_within: model.Micros) -> list[tuple[WorkerRow, int]]:
        """Server replicas (seen within 3 flush periods) and remote workers seen within
        `seen_within`, each with the jobs it holds."""
        now = self.clock.now()
        rows = {r.id: r for r in await self.store.list_workers(now - seen_within)}
        for seen in self._local.values():  # fresher than the table
            if seen.row.last_seen < now - seen_within:
                continue
            stored = rows.get(seen.row.id)
            if seen.asks_known or stored is None:
                rows[seen.row.id] = seen.row
            elif stored.last_seen < seen.row.last_seen:  # its asks as the table knows them
                rows[seen.row.id] = replace(stored, last_seen=seen.row.last_seen)
        rows[self.server_id] = self._own_row()
        server_since = now - int(3 * self.flush_every * model.SECOND) - seen_within
        held = await self.store.jobs_held()
        out = [
            (r, held.get(r.id, 0))
            for r in rows.values()
            if r.kind == REMOTE or r.last_seen >= server_since or r.id == self.server_id
        ]
        out.sort(key=lambda item: (item[0].kind != SERVER, item[0].id))
        return out

    # -- a job with nobody to run it ----------------------------------------------------------

    def waiting_reason(self, job: model.Job) -> str:
        """Why a QUEUED job is not starting, when nobody can run it; '' otherwise."""
        if job.state is not model.JobState.QUEUED or job.http is not None:
            return ""
        if not self.unserved(job.queue, job.task):
            return ""
        return (
            f"no worker: no in-process handler for task {job.task!r} and no worker asked "
            f"for it (queue {job.queue!r}) in the last {NO_WORKER_AFTER // model.SECOND}s"
        )

    def unserved(self, queue: str, task: str) -> bool:
        """No replica runs `task` in-process and no remote worker asked for it in `queue`
        within NO_WORKER_AFTER (False in a server's first NO_WORKER_AFTER)."""
        now = self.clock.now()
        if now - self.started < NO_WORKER_AFTER:
            return False  # workers may not have asked yet
        since = now - NO_WORKER_AFTER
        # a worker only heard from in heartbeats here asked another replica: its row there says
        # what for (empty asks here would mean any queue and any task)
        here = (seen.row for seen in self._local.values() if seen.asks_known)
        rows = [*self._known, *here]
        in_process: set[str] = set(self.handler_tasks)
        for row in rows:
            if row.kind == SERVER and row.last_seen >= since:
                in_process.update(row.tasks)
        if task in in_process:
            return False
        for row in rows:
            if row.kind != REMOTE or row.last_seen < since:
                continue
            if row.queues and queue not in row.queues:
                continue
            if not row.tasks or task in row.tasks:
                return False
        return True
