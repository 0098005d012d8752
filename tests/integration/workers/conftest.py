"""A server whose upkeep looks for expired leases often, so lease tests take seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Running, running_server

RECOVER_INTERVAL = 0.2


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Running]:
    async with running_server(db_url, recover_interval=RECOVER_INTERVAL) as running:
        yield running
