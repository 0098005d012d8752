"""CPU time of processes (all threads), to show how client and server share the cores."""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> tuple[str, float]:
    """(name, user + system CPU seconds so far) of `pid` (Linux /proc; ("", 0.0) when there
    is no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            name, _, rest = f.read().partition("(")[2].rpartition(")")
    except OSError:
        return "", 0.0
    fields = rest.split()
    return name, (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (Linux /proc; 0.0 elsewhere)."""
    return _stat(pid)[1]


def postgres_seconds() -> float:
    """User + system CPU seconds so far of every process named postgres on this machine (its
    backends and background workers; Linux /proc, 0.0 elsewhere): PostgreSQL's share of the
    cores when the database runs here, as the benchmarks' does (127.0.0.1)."""
    pids = os.listdir("/proc") if os.path.isdir("/proc") else []
    stats = (_stat(pid) for pid in pids if pid.isdigit())
    return sum(seconds for name, seconds in stats if name == "postgres")


def self_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuShare:
    """Cores used by a server and by this (client) process over a window, and with `postgres`
    by the PostgreSQL processes of this machine."""

    server_pid: int
    postgres: bool = False
    _wall: float = 0.0
    _server: float = 0.0
    _client: float = 0.0
    _postgres: float = 0.0
    server_cores: float = 0.0
    client_cores: float = 0.0
    postgres_cores: float = 0.0

    def __enter__(self) -> CpuShare:
        self._wall = time.perf_counter()
        self._server = process_seconds(self.server_pid)
        self._client = self_seconds()
        self._postgres = postgres_seconds() if self.postgres else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        self.server_cores = (process_seconds(self.server_pid) - self._server) / wall
        self.client_cores = (self_seconds() - self._client) / wall
        if self.postgres:
            self.postgres_cores = (postgres_seconds() - self._postgres) / wall

    def __str__(self) -> str:
        text = f"server {self.server_cores:.2f} cores, client {self.client_cores:.2f} cores"
        if self.postgres:
            text += f", PostgreSQL {self.postgres_cores:.2f} cores"
        return text


def machine_steal_seconds() -> tuple[float, float]:
    """(CPU seconds the hypervisor gave other guests, all CPU seconds) of this machine's cores
    so far: the `steal` column of /proc/stat and the sum of its columns ((0.0, 0.0) where
    there is no /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            columns = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    # counted in user and nice
    return columns[7] / TICK, sum(columns[:8]) / TICK


class StealMeter:
    """The share of the machine's CPU time its host gave to other guests while the block ran:
    on average and in the worst `every`-second sample (a figure taken while a neighbour
    took a third of the cores says more about the neighbour than about jobwheel)."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.average = 0.0
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._first = (0.0, 0.0)

    def __enter__(self) -> StealMeter:
        self._first = machine_steal_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.average = _share(self._first, machine_steal_seconds())

    def _sample(self) -> None:
        last = machine_steal_seconds()
        while not self._stop.wait(self.every):
            now = machine_steal_seconds()
            self.peak = max(self.peak, _share(last, now))
            last = now

    def __str__(self) -> str:
        return (
            f"CPU time taken by the host for other guests (steal): {self.average:.0%} of the "
            f"machine's on average, {self.peak:.0%} at worst in a {self.every:g} s sample"
        )


def _share(before: tuple[float, float], after: tuple[float, float]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0
