"""What a peer adapter declares and what one run of a workload hands it and gets back.

Importable in the peers' virtual environment: nothing here imports jobwheel or a peer library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

WORKLOADS = ("w1", "w2", "w3", "w4")
TITLES = {
    "w1": "W1 single enqueues, 64 callers (jobs/s)",
    "w2": "W2 batches of 1,000 (jobs/s)",
    "w3": "W3 drain no-ops, defaults (jobs/s)",
    "w4": "W4 fire lateness p50/p99 ms (early)",
}
# the backend classes ratios are taken within; "baseline" is the bare echo RPC
CLASSES = ("embedded", "server", "postgres", "baseline")


@dataclass(frozen=True)
class Sizes:
    enqueues: int = 20_000  # W1
    callers: int = 64  # W1
    connections: int = 16  # W1: PostgreSQL peers' pool (the 64 callers share it; the server
    # takes 100 connections in all, other users included)
    batched: int = 100_000  # W2
    batch: int = 1_000  # W2
    drained: int = 20_000  # W3
    fires: int = 2_000  # W4
    lead: float = 2.0  # W4: the first job is due this many seconds after its enqueue starts
    span: float = 2.0  # W4: due times spread over this many seconds


@dataclass(frozen=True)
class Env:
    """Where the services are; each hook run gets a fresh database / flushed Redis db."""

    workdir: str
    postgres_url: str = ""  # a database created for this run, dropped after it
    redis_url: str = "redis://127.0.0.1:6379/13"


Result = dict[str, float]  # w1-w3: {"rate": jobs/s}; w4: {"p50", "p99" (ms), "early", "fired"}
Hook = Callable[[Sizes, Env], Result]


@dataclass(frozen=True)
class Adapter:
    """One system under test. `hooks` maps a workload to the function that runs it once."""

    name: str
    backend: str  # one of CLASSES
    venv: str  # "project" (jobwheel's .venv) or "peers" (.bench-peers-venv)
    hooks: dict[str, Hook] = field(default_factory=dict)
    needs: str = ""  # the service it runs against: "postgres", "redis" or "" (none)

    @property
    def workloads(self) -> tuple[str, ...]:
        return tuple(w for w in WORKLOADS if w in self.hooks)
