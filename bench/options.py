"""What one run measures and where it keeps its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Options:
    workdir: Path  # databases and server logs of this run
    seconds: float = 5.0  # measuring window of each closed-loop throughput figure
    callers: int = 64  # concurrent EnqueueJob callers
    batch_size: int = 1000
    drain_jobs: int = 20_000
    huey_workers: int = 4
    idle_fires: int = 200
    idle_span: float = 2.0
    loaded_fires: int = 10_000
    loaded_span: float = 5.0
    db_url: str | None = None  # jobwheel's database when not a SQLite file in workdir
    profile: Path | None = None  # py-spy flat profiles of the servers go here

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def db(self, name: str) -> Path:
        return self.workdir / f"{name}.db"
