"""The workers table behind ListWorkers: who runs jobs, as last seen by any replica."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

from jobwheel.server.model import JobState, Micros
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.schema import jobs, workers
from sqlalchemy import and_, bindparam, delete, func, not_, select, update


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: str
    kind: str  # "remote" or "server"
    last_seen: Micros
    queues: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    server: str = ""  # the replica that saw a remote worker
    info: dict[str, str] = field(default_factory=dict)


def names_json(names: Sequence[str]) -> str:
    """The stored text of a worker's asked queues or tasks."""
    return json.dumps(list(names))


def stored_size(queues: Sequence[str], tasks: Sequence[str]) -> int:
    """Characters of a row's asked queues and tasks as stored (forget_workers' keep_asks)."""
    return len(names_json(queues)) + len(names_json(tasks))


def _stored_rows(rows: Sequence[WorkerRow]) -> list[dict[str, object]]:
    """The rows as the table holds them; workers asking the same share one tuple (the roster
    holds each distinct list once), encoded once."""
    texts: dict[int, tuple[Sequence[str], str]] = {}  # by id(); the value keeps the id taken

    def stored(names: Sequence[str]) -> str:
        found = texts.get(id(names))
        if found is None:
            found = texts[id(names)] = (names, names_json(names))
        return found[1]

    return [
        {
            "id": r.id,
            "kind": r.kind,
            "last_seen": r.last_seen,
            "queues": stored(r.queues),
            "tasks": stored(r.tasks),
            "server": r.server,
            "info": json.dumps(r.info),
        }
        for r in rows
    ]


class Workers(StoreBase):
    """Mixed into Store."""

    async def record_workers(
        self,
        rows: Sequence[WorkerRow],
        *,
        unchanged: Collection[str] = (),
        asks_unknown: Collection[str] = (),
    ) -> set[str]:
        """Inserts or replaces the rows (one transaction); a row seen later than the one given
        is kept (another replica saw the worker more recently), but for a remote row whose
        stored last_seen only another replica's heartbeats moved: its asks are written, its
        last_seen stays. Of a row whose id is in `unchanged` (its queues and tasks are as the
        same server wrote them last), only last_seen is written, if the stored row is still
        the one that server wrote; of one in `asks_unknown` (the writer does not know them),
        only last_seen, and nothing when no row is stored (an empty ask would mean any queue
        and any task): returns those ids."""
        unwritten: set[str] = set()
        if not rows:
            return unwritten
        async with self._write() as conn:
            stmt = select(workers.c.id, workers.c.last_seen, workers.c.server).where(
                workers.c.id.in_([r.id for r in rows])
            )
            stored = {
                worker_id: (seen, server) for worker_id, seen, server in await conn.execute(stmt)
            }
            moved: list[dict[str, object]] = []
            full: list[WorkerRow] = []
            for r in rows:
                seen, server = stored.get(r.id, (None, ""))
                if seen is None:
                    if r.id in asks_unknown:
                        unwritten.add(r.id)
                    else:
                        full.append(r)
                elif r.id in asks_unknown or (server == r.server and r.id in unchanged):
                    if seen < r.last_seen:
                        moved.append({"b_id": r.id, "b_seen": r.last_seen})
                elif seen <= r.last_seen:  # its asks changed, or another replica wrote it
                    full.append(r)
                elif r.kind == "remote" and server == r.server:
                    # seen later only in heartbeats elsewhere (which leave the server as it
                    # was): these asks are the newest known
                    full.append(replace(r, last_seen=seen))
            if moved:
                touch = (
                    update(workers)
                    .where(workers.c.id == bindparam("b_id"))
                    .values(last_seen=bindparam("b_seen"))
                )
                await conn.execute(touch, moved)
            if full:
                await conn.execute(delete(workers).where(workers.c.id.in_([r.id for r in full])))
                await conn.execute(workers.insert(), _stored_rows(full))
        return unwritten

    async def list_workers(
        self, seen_since: Micros, *, omit: tuple[str, Collection[str]] | None = None
    ) -> list[WorkerRow]:
        """The rows last seen at or after `seen_since`, by id; omit=(server, held) leaves out
        the remote rows `server` wrote of the workers in `held` (what it holds itself)."""
        recent = workers.c.last_seen >= seen_since
        async with self._read() as conn:
            if omit is None:
                rows = list((await conn.execute(select(workers).where(recent))).mappings())
            else:
                server, held = omit
                mine = and_(workers.c.kind == "remote", workers.c.server == server)
                others = select(workers).where(recent, not_(mine))
                rows = list((await conn.execute(others)).mappings())
                ids = await conn.execute(select(workers.c.id).where(recent, mine))
                missing = [worker_id for (worker_id,) in ids if worker_id not in held]
                step = self.dialect.max_in_list
                for start in range(0, len(missing), step):
                    part = select(workers).where(workers.c.id.in_(missing[start : start + step]))
                    rows += (await conn.execute(part)).mappings()
        rows.sort(key=lambda r: r["id"])
        # workers asking for the same queues or tasks share one tuple
        names: dict[str, tuple[str, ...]] = {}

        def parsed(text: str) -> tuple[str, ...]:
            found = names.get(text)
            if found is None:
                found = names[text] = tuple(json.loads(text))
            return found

        return [
            WorkerRow(
                id=r["id"],
                kind=r["kind"],
                last_seen=r["last_seen"],
                queues=parsed(r["queues"]),
                tasks=parsed(r["tasks"]),
                server=r["server"],
                info=json.loads(r["info"]),
            )
            for r in rows
        ]

    async def remove_worker(self, worker_id: str) -> None:
        async with self._write() as conn:
            await conn.execute(delete(workers).where(workers.c.id == worker_id))

    async def forget_workers(
        self,
        seen_before: Micros,
        *,
        keep_remote: int | None = None,
        keep_asks: int | None = None,
    ) -> int:
        """Deletes the rows last seen before `seen_before` and, of the remote rows, those
        beyond the `keep_remote` most recently seen or past `keep_asks` characters of asked
        queues and tasks (JSON) in all, counted from the most recently seen; returns how many
        went."""
        async with self._write() as conn:
            stmt = delete(workers).where(workers.c.last_seen < seen_before)
            gone = (await conn.execute(stmt)).rowcount
            if keep_remote is None and keep_asks is None:
                return gone
            sizes = (
                select(workers.c.id, func.length(workers.c.queues) + func.length(workers.c.tasks))
                .where(workers.c.kind == "remote")
                .order_by(workers.c.last_seen.desc(), workers.c.id)
            )
            kept, total, extra = 0, 0, []
            for worker_id, size in await conn.execute(sizes):
                total += size
                if (keep_remote is not None and kept >= keep_remote) or (
                    keep_asks is not None and total > keep_asks
                ):
                    extra.append(worker_id)
                else:
                    kept += 1
            step = self.dialect.max_in_list
            for start in range(0, len(extra), step):
                stmt = delete(workers).where(workers.c.id.in_(extra[start : start + step]))
                gone += (await conn.execute(stmt)).rowcount
            return gone

    async def jobs_held(self) -> dict[str, int]:
        """RUNNING jobs by the worker holding them."""
        stmt = (
            select(jobs.c.worker_id, func.count())
            .where(jobs.c.state == JobState.RUNNING.value)
            .group_by(jobs.c.worker_id)
        )
        async with self._read() as conn:
            return {w: int(n) for w, n in await conn.execute(stmt)}
