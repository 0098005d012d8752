"""The blocking client is generated from the asyncio one: it must be what the generator
writes, and the two must offer the same methods with the same parameters."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
from jobwheel.client import AsyncClient, Client

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import gen_sync_client  # noqa: E402


def test_sync_client_is_the_generated_one() -> None:
    assert gen_sync_client.TARGET.read_text() == gen_sync_client.generate(), (
        "client/jobwheel/client/sync.py differs from what tools/gen_sync_client.py writes "
        "from aio.py: edit aio.py and run `make gen`"
    )


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and (not name.startswith("_") or name == "__init__")
    }


def test_same_methods_and_parameters() -> None:
    sync, aio = _public(Client), _public(AsyncClient)
    assert sorted(sync) == sorted(aio)
    for name, signature in aio.items():
        params = [(p.name, p.kind, p.default) for p in signature.parameters.values()]
        other = [(p.name, p.kind, p.default) for p in sync[name].parameters.values()]
        if name == "__init__":  # the sleep function differs (asyncio.sleep, time.sleep)
            params = [p for p in params if p[0] != "sleep"]
            other = [p for p in other if p[0] != "sleep"]
        assert params == other, name


@pytest.mark.parametrize("name", sorted(_public(AsyncClient)))
def test_async_methods_are_awaitable_or_async_iterators(name: str) -> None:
    member = getattr(AsyncClient, name)
    if name == "__init__":
        return
    assert inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member), name
    assert not inspect.iscoroutinefunction(getattr(Client, name)), name
