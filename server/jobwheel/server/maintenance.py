"""Maintenance services: small duties run on their own intervals, some by the leader only.

The engine declares them (renew leases, recover lost attempts, follow settings, prune);
`Maintenance.run` ticks every `tick` µs and runs each duty that is due. A duty that fails
is logged and tried again at its next turn; the others run all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from jobwheel.server.clock import Clock
from jobwheel.server.model import SECOND, Micros
from jobwheel.server.signals import Signal
from jobwheel.server.storage import DatabaseUnavailable

log = logging.getLogger(__name__)


@dataclass
class Duty:
    """`run(now)` every `every` µs (at the first tick at or after it is due); with
    `leader_only`, only on the replica that holds leadership."""

    name: str
    every: Micros
    run: Callable[[Micros], Awaitable[None]]
    leader_only: bool = False
    first_after: Micros = 0  # µs after start of the first run (0: the first tick)


class Maintenance:
    def __init__(
        self,
        clock: Clock,
        duties: Sequence[Duty],
        is_leader: Callable[[], Awaitable[bool]],
        tick: Micros,
    ) -> None:
        self.clock = clock
        self.duties = list(duties)
        self.is_leader = is_leader
        self.tick = tick
        # fired after each pass over the duties: tests wait on it
        self.passes = Signal()

    async def run(self) -> None:
        start = self.clock.now()
        due = {d.name: start + d.first_after for d in self.duties}
        while True:
            await self.clock.sleep(self.tick / SECOND)
            now = self.clock.now()
            leading: bool | None = None
            for duty in self.duties:
                if now < due[duty.name]:
                    continue
                try:
                    if duty.leader_only:
                        if leading is None:  # one replica does the upkeep of all
                            leading = await self.is_leader()
                        if not leading:
                            continue
                    await duty.run(now)
                    due[duty.name] = now + duty.every
                except DatabaseUnavailable as exc:
                    log.warning("%s paused: %s", duty.name, exc)
                except Exception:
                    log.exception("%s failed; retrying", duty.name)
            self.passes.fire()
