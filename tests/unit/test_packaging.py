"""The package split, read from the files: what the client side imports is in the base
dependencies, the server's dependencies are behind the `server` extra, what either imports
only when it is installed (OpenTelemetry) is the `otel` extra, and `make serve` installs the
server extra alone. (tests/acceptance/test_client_install.py installs it for real.)"""

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
    return {normal(re.split(r"[\[<>=;\s]", r, maxsplit=1)[0]) for r in requirements}


def normal(distribution: str) -> str:
    """A distribution name as PEP 503 compares them (prometheus_client = prometheus-client)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _imported(node: ast.AST) -> set[str]:
    """The dotted names an import statement binds (`from a.b import c`: a.b.c)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return {f"{node.module}.{a.name}" for a in node.names}
    return set()


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError")
               for k in kinds)  # fmt: skip


def imports(package: Path) -> tuple[set[str], set[str]]:
    """What the files under `package` import, as (required, optional) dotted names, outside
    the standard library and jobwheel. A top-level package imported anywhere inside a
    `try: ... except ImportError` is optional everywhere: the code checks it is there."""
    every: set[str] = set()
    guarded: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            every |= _imported(node)
            if isinstance(node, ast.Try) and any(map(_catches_import_error, node.handlers)):
                guarded |= {
                    n for stmt in node.body for sub in ast.walk(stmt) for n in _imported(sub)
                }
    outside = {n for n in every if n.split(".")[0] not in {*sys.stdlib_module_names, "jobwheel"}}
    optional_tops = {n.split(".")[0] for n in guarded}
    optional = {n for n in outside if n.split(".")[0] in optional_tops}
    return outside - optional, optional


def distributions(names: set[str]) -> set[str]:
    mapping = metadata.packages_distributions()
    found = set()
    for top in {n.split(".")[0] for n in names}:
        found |= {normal(d) for d in mapping.get(top, [top])}
    return found


def provided_by(extra: str) -> set[str]:
    """The modules the distributions of an extra install (dotted names)."""
    modules = set()
    for name in names(PROJECT["optional-dependencies"][extra]):
        for f in metadata.distribution(name).files or []:
            if f.suffix == ".py":
                parts = f.with_suffix("").parts
                modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def from_extra(name: str, modules: set[str]) -> bool:
    """`name` (a.b.c) or a package above it, below the top level, is one of `modules`."""
    parts = name.split(".")
    return any(".".join(parts[:i]) in modules for i in range(2, len(parts) + 1))


def test_the_client_side_needs_only_the_base_dependencies() -> None:
    base = names(PROJECT["dependencies"])
    otel = provided_by("otel")
    for package in ("client/jobwheel/client", "client/jobwheel/v1"):
        required, optional = imports(ROOT / package)
        assert distributions(required) <= base, package
        # OpenTelemetry, when installed (jobwheel[otel]), traces a worker's attempts
        extra = {n for n in optional if not distributions({n}) <= base}
        assert all(from_extra(n, otel) for n in extra), (package, extra)


def test_the_server_dependencies_are_the_server_extra() -> None:
    base, server = names(PROJECT["dependencies"]), names(PROJECT["optional-dependencies"]["server"])
    required, optional = imports(ROOT / "server/jobwheel/server")
    assert distributions(required) <= base | server
    extra = {n for n in optional if not distributions({n}) <= base | server}
    assert extra and all(from_extra(n, provided_by("otel")) for n in extra), extra
    assert not base & {"sqlalchemy", "aiosqlite", "asyncpg", "croniter", "httpx", "httpcore"}
    assert "prometheus-client" in server
    assert {"jobwheel[server]", "jobwheel[otel]"} <= set(PROJECT["optional-dependencies"]["test"])


def test_make_serve_installs_the_server_extra_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(SERVE_STAMP\):.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None and "pip install --quiet -e '.[server]'" in recipe.group(1)
    assert re.search(r"^serve: .*\$\(SERVE_STAMP\)", makefile, re.M)
