"""The client suites run against SQLite only: the backends are covered by tests/storage."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobwheel.db'}"
