"""CPU time of processes (all threads), to show how client and server share the cores."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def self_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuShare:
    """Cores used by a server and by this (client) process over a window."""

    server_pid: int
    _wall: float = 0.0
    _server: float = 0.0
    _client: float = 0.0
    server_cores: float = 0.0
    client_cores: float = 0.0

    def __enter__(self) -> CpuShare:
        self._wall = time.perf_counter()
        self._server = process_seconds(self.server_pid)
        self._client = self_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        self.server_cores = (process_seconds(self.server_pid) - self._server) / wall
        self.client_cores = (self_seconds() - self._client) / wall

    def __str__(self) -> str:
        return f"server {self.server_cores:.2f} cores, client {self.client_cores:.2f} cores"
