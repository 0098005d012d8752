"""Whether the database can be reached, for the health service.

A store call that finds the database unreachable says so at once (`suspect`); a probe then
confirms it, and keeps probing until the database answers again. The health service reports
NOT_SERVING in between, so load balancers and orchestrators route around the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from jobwheel.server.storage import DatabaseUnavailable

log = logging.getLogger(__name__)


class DatabaseHealth:
    def __init__(
        self,
        on_change: Callable[[bool], Awaitable[None]],
        *,
        every: float = 2.0,
        while_down: float = 0.5,
        timeout: float = 3.0,
    ) -> None:
        """`on_change(available)` is awaited on every change. Probes run every `every`
        seconds (`while_down` while unreachable), each given `timeout` seconds. Built before
        the store, which is told `suspect`; `run` takes the probe, a cheap read of it."""
        self.on_change = on_change
        self.every = every
        self.while_down = while_down
        self.timeout = timeout
        self.available = True
        self._since = time.monotonic()
        self._suspect = asyncio.Event()

    def suspect(self) -> None:
        """A call just found the database unreachable: probe now."""
        if self.available:
            self._suspect.set()

    async def _reachable(self, probe: Callable[[], Awaitable[object]]) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(self.timeout):
                await probe()
        except DatabaseUnavailable as exc:
            return False, str(exc)
        except TimeoutError:
            return False, f"no answer within {self.timeout:g}s"
        return True, ""

    async def run(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Probes until cancelled: `probe()` raises DatabaseUnavailable when unreachable."""
        while True:
            wait = self.every if self.available else self.while_down
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._suspect.wait()
            try:
                ok, why = await self._reachable(probe)
            except Exception:
                log.exception("database probe failed")
                continue
            finally:
                self._suspect.clear()
            if ok == self.available:
                continue
            self.available = ok
            took = time.monotonic() - self._since
            self._since = time.monotonic()
            if ok:
                log.warning("database reachable again after %.1fs: health SERVING", took)
            else:
                log.error("%s: health NOT_SERVING until it answers again", why)
            await self.on_change(ok)
