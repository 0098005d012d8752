"""What the engine needs from storage: the one seam between them.

The engine (engine.py, the dispatcher, the scheduler, overlaps, event deliveries,
leadership) is written against this Protocol; storage.Store (its mixins behind it) is the
implementation for SQLite and PostgreSQL. Times are µs since the epoch (model.Micros).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from jobwheel.server.model import Event, EventSubscription, Job, Micros, NewJob, QueueSettings
from jobwheel.server.rules.states import CatchUp, Settlement
from jobwheel.server.storage.dialect import Dialect
from jobwheel.server.storage.transitions import FireClaim
from sqlalchemy.ext.asyncio import AsyncEngine


class EngineStore(Protocol):
    @property
    def dialect(self) -> Dialect: ...

    @property
    def read_engine(self) -> AsyncEngine: ...

    # -- the wheel and the dispatcher --------------------------------------------------------
    async def due_before(self, until: Micros, limit: int) -> list[tuple[str, Micros]]: ...

    async def queues_with_queued_jobs(self) -> set[str]: ...

    async def promote_due(
        self,
        now: Micros,
        misfire_before: Micros | None = None,
        catch_up: CatchUp | None = None,
    ) -> set[str]: ...

    async def fire_due(
        self,
        now: Micros,
        misfire_before: Micros | None = None,
        catch_up: CatchUp | None = None,
        claim: FireClaim | None = None,
    ) -> tuple[set[str], list[Job]]: ...

    async def claim(
        self,
        queue: str,
        tasks: Collection[str],
        limit: int,
        worker_id: str,
        now: Micros,
        lease_until: Micros,
        *,
        include_http: bool = False,
    ) -> list[Job]: ...

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]: ...

    async def dispatch_cycle(
        self,
        settlements: Sequence[Settlement],
        claims: Sequence[tuple[str, int]],
        tasks: Collection[str],
        worker_id: str,
        now: Micros,
        lease_until: Micros,
        *,
        include_http: bool = False,
    ) -> tuple[list[bool], list[list[Job]]]: ...

    async def attempt_id(self, job_id: str, execution: int, number: int) -> str | None: ...

    async def queue_settings(self) -> dict[str, QueueSettings]: ...

    async def insert_jobs(self, new_jobs: Sequence[NewJob]) -> list[tuple[Job, bool]]: ...

    # -- leases and maintenance ----------------------------------------------------------------
    async def renew_leases(
        self, worker_id: str, job_ids: Sequence[str], now: Micros, until: Micros
    ) -> int: ...

    async def running_jobs_lost(
        self, now: Micros, dead_worker_prefix: str | None = None, limit: int = 1000
    ) -> list[Job]: ...

    async def prune_events(
        self, before: Micros, keep_at_least: int = 1, limit: int = 10_000
    ) -> int: ...

    async def prune_finished(
        self, ended_before: Micros, limit: int = 1000, *, now: Micros | None = None
    ) -> int: ...

    # -- event deliveries ----------------------------------------------------------------------
    async def read_events(self, after: int, limit: int) -> list[Event]: ...

    async def subscriptions(self) -> list[EventSubscription]: ...

    async def delivery_cursor(self) -> tuple[int, int]: ...

    async def advance_delivery_cursor(self, old: int, new: int) -> bool: ...
