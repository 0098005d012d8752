"""The client suites run against SQLite only: tests/integration/storage covers the backends."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobwheel.db'}"
