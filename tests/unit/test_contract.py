"""The contract: stubs reproducible from proto/, buf lint silent, no breaking change vs main."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "client" / "jobwheel" / "v1"
BUF = Path(sys.executable).parent / "buf"
MYPY_GRPC = Path(sys.executable).parent / "protoc-gen-mypy_grpc"


def test_generated_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--plugin=protoc-gen-mypy_grpc={MYPY_GRPC}",
            f"--mypy_grpc_out={tmp_path}",
            *protos,
        ]
    )
    assert rc == 0
    fresh = tmp_path / "jobwheel" / "v1"
    generated = sorted(p.name for p in fresh.iterdir())
    committed = sorted(p.name for p in STUBS.iterdir() if "_pb2" in p.name)
    assert generated == committed, "run `make gen` and commit the result"
    _, mismatch, errors = filecmp.cmpfiles(fresh, STUBS, generated, shallow=False)
    assert not mismatch and not errors, f"stale stubs {mismatch}: run `make gen`"


def test_served_descriptors_match_a_fresh_generation(tmp_path: Path) -> None:
    """Reflection serves these (with the proto comments): they follow proto/ too."""
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    out = tmp_path / "descriptors.binpb"
    rc = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"-I{include}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *protos,
        ]
    )
    assert rc == 0
    assert out.read_bytes() == (STUBS / "descriptors.binpb").read_bytes(), "run `make gen`"


def run_buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_buf_lint_is_silent() -> None:
    result = run_buf("lint")
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_no_breaking_change_against_main() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "refs/heads/main"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if has_main.returncode != 0:
        pytest.skip("no main branch to compare with")
    result = run_buf("breaking", "--against", ".git#branch=main")
    assert result.returncode == 0, result.stdout + result.stderr
