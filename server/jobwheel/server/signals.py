"""Signals: a counter of occurrences that can be awaited (a dispatch cycle finished, a
watcher subscribed, a maintenance pass done), so tests wait on events, not on time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Signal:
    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def fire(self) -> None:
        self.count += 1
        self._changed.set()

    async def reach(self, count: int) -> None:
        """Returns once the signal fired `count` times in all."""
        while self.count < count:
            self._changed.clear()
            await self._changed.wait()

    def next(self, n: int = 1) -> Coroutine[Any, Any, None]:
        """Waits for `n` more firings, counted from this call (not from the first await)."""
        return self.reach(self.count + n)
