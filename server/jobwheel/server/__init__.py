"""The jobwheel server. Handlers register with `from jobwheel.server import task`."""

from jobwheel.server.handlers import task

__all__ = ["task"]
