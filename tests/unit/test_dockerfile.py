"""The image builds from what the repository holds (no Docker engine here: a static check)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_copies_what_exists_and_runs_the_server() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    assert 'ENTRYPOINT ["jobwheel-server"]' in text
    health = text[text.index("HEALTHCHECK") :].split("\n\n")[0]
    # it follows JOBWHEEL_LISTEN: no fixed address in the check
    assert "jobwheel.server.healthcheck" in health and "50051" not in health
