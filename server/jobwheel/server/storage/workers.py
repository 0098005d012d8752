"""The workers table behind ListWorkers: who runs jobs, as last seen by any replica."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from jobwheel.server.model import JobState, Micros
from jobwheel.server.storage.base import StoreBase
from jobwheel.server.storage.schema import jobs, workers
from sqlalchemy import delete, func, select


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


def asks_size(row: WorkerRow) -> int:
    """Characters of the row's asked queues and tasks as stored (forget_workers' keep_asks)."""
    return len(names_json(row.queues)) + len(names_json(row.tasks))


class Workers(StoreBase):
    """Mixed into Store."""

    async def record_workers(self, rows: Sequence[WorkerRow]) -> None:
        """Inserts or replaces the rows (one transaction); a row seen later than the one
        given is kept (another replica saw the worker more recently)."""
        if not rows:
            return
        async with self._write() as conn:
            ids = [r.id for r in rows]
            seen = {
                r.id: r.last_seen
                for r in await conn.execute(
                    select(workers.c.id, workers.c.last_seen).where(workers.c.id.in_(ids))
                )
            }
            rows = [r for r in rows if seen.get(r.id, r.last_seen) <= r.last_seen]
            if not rows:
                return
            await conn.execute(delete(workers).where(workers.c.id.in_([r.id for r in rows])))
            await conn.execute(
                workers.insert(),
                [
                    {
                        "id": r.id,
                        "kind": r.kind,
                        "last_seen": r.last_seen,
                        "queues": names_json(r.queues),
                        "tasks": names_json(r.tasks),
                        "server": r.server,
                        "info": json.dumps(r.info),
                    }
                    for r in rows
                ],
            )

    async def list_workers(self, seen_since: Micros) -> list[WorkerRow]:
        stmt = select(workers).where(workers.c.last_seen >= seen_since).order_by(workers.c.id)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
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
