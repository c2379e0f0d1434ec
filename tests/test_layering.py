"""The layering of the code: ``dag_core`` (pure library) ← ``tasks`` (thin Prefect tasks) ←
``flows`` (one flow per DVC stage); no arrow points up and no module takes another's privates."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("dag_core", "tasks", "flows")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every import in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [alias.name for alias in node.names]


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


@pytest.mark.parametrize(("package", "banned"), [("dag_core", "prefect"), ("dag_core", "tasks")])
def test_dag_core_imports_no_prefect_and_nothing_above_it(package: str, banned: str) -> None:
    bad = [
        _where(path, line)
        for path in _modules(package)
        for line, module, _ in _imports(path)
        if module.split(".")[0] in (banned, "flows")
    ]
    assert not bad, f"{package} must not import {banned} or flows: {bad}"


def test_tasks_do_not_import_flows() -> None:
    bad = [
        _where(path, line)
        for path in _modules("tasks")
        for line, module, _ in _imports(path)
        if module.split(".")[0] == "flows"
    ]
    assert not bad, f"tasks must not import flows (an upward arrow): {bad}"


def test_no_private_names_across_modules() -> None:
    bad = [
        f"{_where(path, line)} takes {name} from {module}"
        for package in FIRST_PARTY
        for path in _modules(package)
        for line, module, names in _imports(path)
        if module.split(".")[0] in FIRST_PARTY
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not bad, f"private names imported across modules: {bad}"


def test_importing_every_library_module_loads_no_prefect() -> None:
    """Transitively too: every ``dag_core`` module imported in a fresh interpreter."""
    names = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in _modules("dag_core")
        if path.name != "__main__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "above = ('prefect', 'tasks', 'flows')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in above))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
