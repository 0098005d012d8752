"""The clock, injectable so tests control time instead of sleeping."""

import time
from typing import Protocol

from jobwheel.server.model import Micros


class Clock(Protocol):
    def now(self) -> Micros: ...


class SystemClock:
    def now(self) -> Micros:
        return time.time_ns() // 1_000
