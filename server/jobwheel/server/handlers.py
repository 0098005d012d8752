"""In-process task handlers: `@task("name")` registers a function, `--handlers` imports them."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

Handler = Callable[..., Any]
H = TypeVar("H", bound=Handler)

_registry: dict[str, Handler] = {}


def task(name: str) -> Callable[[H], H]:
    """Registers the decorated function (async or not) as the handler of task `name`.

    It is called with the job's payload (a dict) and a context (job id, attempt,
    cancellation); what it returns (JSON-able) becomes the job's result.
    """
    if not name:
        raise ValueError("a task needs a name")

    def register(fn: H) -> H:
        existing = _registry.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"task {name!r} already has a handler: {existing!r}")
        _registry[name] = fn
        return fn

    return register


def registered() -> dict[str, Handler]:
    return dict(_registry)


def load_modules(modules: Iterable[str]) -> None:
    # like other servers that import application code, look in the working directory too
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise HandlersError(f"cannot load handlers module {module!r}: {_why(exc)}") from exc


class HandlersError(Exception):
    """A --handlers module is missing or failed while being imported."""


def _why(exc: Exception) -> str:
    """The error and where it was raised (the innermost frame), on one line."""
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    if isinstance(exc, ModuleNotFoundError | SyntaxError) or exc.__traceback__ is None:
        return what  # the message already names the module, or the file and line
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{what} (at {frame.filename}:{frame.lineno})"
