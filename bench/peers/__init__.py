"""`python -m bench peers`: the four workloads against jobwheel and the Python peers.

Each adapter module declares ADAPTERS (bench.peers.spec.Adapter): a name, a backend class,
the virtual environment it runs in and one hook per workload it supports. Peer libraries are
imported inside the hooks, so every module imports in either environment.
"""

from __future__ import annotations

import importlib

from bench.peers.spec import Adapter

MODULES = (
    "jobwheel_adapter",
    "huey_adapter",
    "arq_adapter",
    "dramatiq_adapter",
    "rq_adapter",
    "celery_adapter",
    "pgqueuer_adapter",
    "procrastinate_adapter",
    "apscheduler_adapter",
)


def adapters() -> list[Adapter]:
    found: list[Adapter] = []
    for name in MODULES:
        found += importlib.import_module(f"bench.peers.{name}").ADAPTERS
    return found


def by_name(name: str) -> Adapter:
    for adapter in adapters():
        if adapter.name == name:
            return adapter
    raise KeyError(name)
