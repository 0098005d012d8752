from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from jobwheel.server import log_throttle
from jobwheel.server.observability import logs

from tests.integration.api.conftest import receiver
from tests.integration.storage.conftest import store, store_url

__all__ = ["receiver", "store", "store_url"]


@pytest.fixture
def root_stream() -> Iterator[io.StringIO]:
    """The root logger writing to a string, as `logs.configure` sets it up, with the
    throttle filter the server adds; the previous set-up is put back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    logs.configure("INFO", "text", stream)
    log_throttle.install()
    try:
        yield stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
