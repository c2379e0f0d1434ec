"""The layering of the code: ``dag_core`` (pure library) ← ``tasks`` (thin Prefect tasks) ←
``flows`` (one flow per DVC stage), and inside ``dag_core`` the floors of :data:`FLOORS` (library
helpers below the stages' modules); no arrow points up and no module takes another's privates."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("dag_core", "tasks", "flows")

#: The floors inside ``dag_core``, lowest first, by top-level module or package (``__init__``:
#: the package's own ``__init__.py``). A module imports from its own floor and the floors below,
#: never from a floor above: a stage's module may use a model or a metric, a metric never a stage.
FLOORS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "foundation",
        frozenset(
            {"__init__", "atomic", "errors", "figures", "filechecks", "interrupt", "nyu"}
            | {"process", "resize", "uncertainty", "unet_configs", "validation", "world"}
        ),
    ),
    (
        "settings and formats",
        frozenset(
            {"cards", "checkpoint", "configs", "depthnorm", "hf", "resumable", "runtime"}
            | {"shards", "sources"}
        ),
    ),
    ("models", frozenset({"depthnet", "features", "heads", "prior", "strength"})),
    ("measures", frozenset({"metrics"})),
    ("guided sampling", frozenset({"backbone", "guidance", "guidance_runtime", "sampling"})),
    (
        "stages",
        frozenset({"downstream", "labeller", "probe", "results", "resume", "sweep", "synthesis"}),
    ),
)


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


def _where(path: Path, line: int, root: Path = ROOT) -> str:
    return f"{path.relative_to(root)}:{line}"


def _unit(path: Path, root: Path) -> str:
    """The top-level module or package of ``dag_core`` that file ``path`` belongs to."""
    parts = path.relative_to(root / "dag_core").with_suffix("").parts
    return parts[0]


def _imported_units(path: Path, top: Path) -> Iterator[tuple[int, str]]:
    """(line, ``dag_core`` unit) for every import of ``dag_core`` in ``path``, lazy and
    ``importlib.import_module("dag_core....")`` ones included."""
    for line, module, names in _imports(path):
        parts = module.split(".")
        if parts[0] != "dag_core":
            continue
        if len(parts) > 1:
            yield line, parts[1]
        else:  # from dag_core import X: X is a unit, or a name of dag_core/__init__.py
            for name in names or ["__init__"]:
                yield line, name if _unit_exists(top, name) else "__init__"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).startswith("dag_core.")
        ):
            yield node.lineno, str(node.args[0].value).split(".")[1]


def _unit_exists(top: Path, name: str) -> bool:
    """Whether ``top`` (a ``dag_core`` folder) has a module or package ``name``."""
    return (top / f"{name}.py").exists() or (top / name / "__init__.py").exists()


def floor_violations(root: Path) -> list[str]:
    """Every import in ``root/dag_core`` that points up a floor of :data:`FLOORS`, and every
    ``dag_core`` module that no floor holds."""
    floor = {unit: (i, name) for i, (name, units) in enumerate(FLOORS) for unit in units}
    bad: list[str] = []
    for path in sorted((root / "dag_core").rglob("*.py")):
        unit = _unit(path, root)
        if unit not in floor:
            bad.append(f"{_where(path, 1, root)}: dag_core.{unit} is on no floor of FLOORS")
            continue
        for line, target in _imported_units(path, root / "dag_core"):
            if target in floor and floor[target][0] > floor[unit][0]:
                bad.append(
                    f"{_where(path, line, root)}: {floor[unit][1]} imports dag_core.{target} "
                    f"({floor[target][1]})"
                )
    return bad


@pytest.mark.parametrize(("package", "banned"), [("dag_core", "prefect"), ("dag_core", "tasks")])
def test_dag_core_imports_no_prefect_and_nothing_above_it(package: str, banned: str) -> None:
    bad = [
        _where(path, line)
        for path in _modules(package)
        for line, module, _ in _imports(path)
        if module.split(".")[0] in (banned, "flows")
    ]
    assert not bad, f"{package} must not import {banned} or flows: {bad}"


def test_dag_core_arrows_point_down_its_floors() -> None:
    """Library helpers sit below the stages' modules (e.g. the dFID scorer takes the depth
    network from :mod:`dag_core.depthnet`, not from the downstream stage's package)."""
    bad = floor_violations(ROOT)
    assert not bad, "dag_core imports against its floors:\n" + "\n".join(bad)
    placed = [unit for _, units in FLOORS for unit in units]
    assert len(placed) == len(set(placed)), "a unit is on two floors"
    gone = [u for u in placed if u != "__init__" and not _unit_exists(ROOT / "dag_core", u)]
    assert not gone, f"FLOORS names modules that do not exist: {gone}"


def test_floor_check_sees_upward_imports(tmp_path: Path) -> None:
    """The check is not vacuous: the scorer's old import of the downstream package, a lazy
    import, ``from dag_core import X`` and ``import_module`` upward are found; a module on no
    floor is named."""
    files = {
        "dag_core/__init__.py": "from dag_core.errors import DagError\n",
        "dag_core/errors.py": "",
        "dag_core/downstream/__init__.py": "from dag_core.depthnet import load_depth_net\n",
        "dag_core/depthnet/__init__.py": "from dag_core import errors\n",
        "dag_core/metrics/__init__.py": "import importlib as i\ni.import_module('dag_core.sweep')",
        "dag_core/metrics/scorer.py": (
            "from dag_core.downstream import WEIGHTS_FILE, load_depth_net, predict_depth\n"
        ),
        "dag_core/heads/model.py": "def f():\n    from dag_core import synthesis\n",
        "dag_core/synthesis.py": "from dag_core.heads import model\n",
        "dag_core/sweep.py": "",
        "dag_core/newthing.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert floor_violations(tmp_path) == [
        "dag_core/heads/model.py:2: models imports dag_core.synthesis (stages)",
        "dag_core/metrics/__init__.py:2: measures imports dag_core.sweep (stages)",
        "dag_core/metrics/scorer.py:1: measures imports dag_core.downstream (stages)",
        "dag_core/newthing.py:1: dag_core.newthing is on no floor of FLOORS",
    ]


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
