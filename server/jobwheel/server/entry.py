"""The `jobwheel-server` command. The base install is the client; the server's dependencies
come with the `server` extra, so a missing one gets a one-line hint instead of a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from jobwheel.server.app import main as serve
    except ModuleNotFoundError as err:
        sys.exit(
            f"jobwheel-server: {err.name} is not installed; the server needs its extra: "
            "pip install 'jobwheel[server]'"
        )
    serve()
