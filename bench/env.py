"""The machine the figures come from."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def describe() -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpu = f"{os.cpu_count()} CPUs" + (f" ({affinity} usable)" if affinity else "")
    return [
        f"machine: {platform.machine()} {platform.system()} {platform.release()}, {cpu}",
        f"python: {sys.version.split()[0]} ({platform.python_implementation()})",
        f"sqlite: {sqlite3.sqlite_version}",
        f"grpcio: {_version('grpcio')}, protobuf: {_version('protobuf')}, huey: {_version('huey')}",
    ]
