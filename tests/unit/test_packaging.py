"""The package split, read from the files: what the client side imports is in the base
dependencies, the server's dependencies are behind the `server` extra, and `make serve`
installs that extra alone. (tests/acceptance/test_client_install.py installs it for real.)"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=;\s]", r, maxsplit=1)[0].lower() for r in requirements}


def imported_distributions(package: Path) -> set[str]:
    """The distributions whose modules the files under `package` import."""
    modules: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    mapping = metadata.packages_distributions()
    found = set()
    for module in modules - set(sys.stdlib_module_names) - {"jobwheel"}:
        found |= {d.lower() for d in mapping.get(module, [module])}
    return found


def test_the_client_side_needs_only_the_base_dependencies() -> None:
    base = names(PROJECT["dependencies"])
    for package in ("client/jobwheel/client", "client/jobwheel/v1"):
        assert imported_distributions(ROOT / package) <= base, package


def test_the_server_dependencies_are_the_server_extra() -> None:
    base, server = names(PROJECT["dependencies"]), names(PROJECT["optional-dependencies"]["server"])
    needed = imported_distributions(ROOT / "server/jobwheel/server")
    assert needed <= base | server
    assert not base & {"sqlalchemy", "aiosqlite", "asyncpg", "croniter", "httpx", "httpcore"}
    assert "jobwheel[server]" in PROJECT["optional-dependencies"]["test"]


def test_make_serve_installs_the_server_extra_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(SERVE_STAMP\):.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None and "pip install --quiet -e '.[server]'" in recipe.group(1)
    assert re.search(r"^serve: .*\$\(SERVE_STAMP\)", makefile, re.M)
