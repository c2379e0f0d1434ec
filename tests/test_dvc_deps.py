"""dvc.yaml's code dependencies are the stages' import closures: they cannot go stale.

Each stage runs ``python -m flows.<stage>``; everything that command imports from the project
(flows/, tasks/, dag_core/, package ``__init__.py`` files included) decides its results, so a
change to any of those files must rerun the stage. The closure is read from the source with
``ast``: every ``import`` / ``from … import`` anywhere in a file (module level, inside functions,
inside ``if TYPE_CHECKING`` blocks: all are counted, the same way everywhere) and every
``importlib.import_module("<literal>")``, restricted to the first-party packages.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("dag_core", "flows", "tasks")
TEMPLATE = re.compile(r"\$\{[^}]*\}")
CMD = re.compile(r"^python -m ([\w.]+)(?:\s|$)")


def module_file(root: Path, name: str) -> Path | None:
    """The file that defines module ``name`` under ``root`` (``a/b.py`` or ``a/b/__init__.py``)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    """The dotted name of the module in ``path`` (a package for an ``__init__.py``)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(root: Path, path: Path) -> Iterator[tuple[str, bool]]:
    """Every module name that ``path`` may import (absolute), first-party or not, and whether
    it must be a module.

    ``from pkg import name`` yields ``(pkg, True)`` and ``(pkg.name, False)``: the latter is a
    submodule when such a file exists, otherwise an attribute of ``pkg``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, True) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: up from the file's own package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base, True
            yield from ((f"{base}.{a.name}", False) for a in node.names if a.name != "*")
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, True


def _with_parents(root: Path, name: str) -> list[Path]:
    """The files Python executes to import ``name``: each parent package's ``__init__.py``
    first, then the module itself (missing pieces are skipped: not a module)."""
    parts = name.split(".")
    found = [module_file(root, ".".join(parts[: i + 1])) for i in range(len(parts))]
    return [f for f in found if f is not None]


def import_closure(root: Path, entry: str) -> set[Path]:
    """Every first-party file that ``python -m <entry>`` imports, directly or transitively."""
    todo = _with_parents(root, entry)
    if not todo or module_name(root, todo[-1]) != entry:
        raise AssertionError(f"module {entry} not found under {root}")
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name, required in _imported_names(root, path):
            if name.split(".")[0] not in FIRST_PARTY:
                continue
            if required and module_file(root, name) is None:
                raise AssertionError(f"{path.relative_to(root)} imports {name}: no such module")
            todo.extend(_with_parents(root, name))
    return seen


def stage_entry(stage: str, spec: Mapping[str, Any]) -> str:
    """The module a stage runs: ``python -m <module>`` is the only command form used."""
    match = CMD.match(str(spec.get("cmd", "")))
    assert match, f"stage {stage}: cmd {spec.get('cmd')!r} is not `python -m <module>`"
    return match.group(1)


def literal_deps(spec: Mapping[str, Any]) -> list[str]:
    """A stage's dependency paths, less the ``${...}`` templated (data) ones."""
    return [str(d) for d in spec.get("deps") or [] if not TEMPLATE.search(str(d))]


def load_stages(root: Path = ROOT) -> dict[str, dict[str, Any]]:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


STAGES = load_stages()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_cover_the_import_closure(stage: str) -> None:
    spec = STAGES[stage]
    closure = import_closure(ROOT, stage_entry(stage, spec))
    listed = {(ROOT / d).resolve() for d in literal_deps(spec)}
    missing = sorted(
        str(f.relative_to(ROOT))
        for f in closure
        if not any(f == d or d in f.parents for d in listed)
    )
    assert not missing, f"dvc.yaml stage {stage} misses deps it imports: {', '.join(missing)}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_exist_and_are_imported(stage: str) -> None:
    """No stale entry (a moved or deleted file), and no project .py file the stage never imports
    (a dependency that reruns the stage for nothing)."""
    spec = STAGES[stage]
    closure = import_closure(ROOT, stage_entry(stage, spec))
    deps = literal_deps(spec)
    gone = [d for d in deps if not (ROOT / d).exists()]
    assert not gone, f"dvc.yaml stage {stage} lists deps that do not exist: {', '.join(gone)}"
    unused = [
        d
        for d in deps
        if d.endswith(".py")
        and d.split("/")[0] in FIRST_PARTY
        and (ROOT / d).resolve() not in closure
    ]
    assert not unused, f"dvc.yaml stage {stage} lists files it never imports: {', '.join(unused)}"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_project_data_read_through_params_is_a_dep(stage: str) -> None:
    """A params value naming a path inside the project's packages (the shipped embedded model,
    ``base_model.pretrained: dag_core/embedded/world-ddpm-32``) is data the stage reads: a dep."""
    spec = STAGES[stage]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    listed = [Path(d) for d in literal_deps(spec)]
    missing: list[str] = []
    for group in spec.get("params") or []:
        for text in _strings(params.get(group) if isinstance(group, str) else None):
            rel = Path(text)
            if rel.is_absolute() or not rel.parts or rel.parts[0] not in FIRST_PARTY:
                continue
            if (ROOT / rel).exists() and not any(rel == d or d in rel.parents for d in listed):
                missing.append(text)
    assert not missing, f"dvc.yaml stage {stage} reads {', '.join(missing)} but does not list it"


def test_closure_follows_lazy_and_package_imports() -> None:
    """The closure is not vacuous: it sees imports inside functions, ``from pkg import module``,
    ``importlib.import_module`` and the packages' ``__init__.py`` files."""
    closure = {str(p.relative_to(ROOT)) for p in import_closure(ROOT, "flows.synthesize")}
    assert {"flows/__init__.py", "flows/cli/run.py", "dag_core/__init__.py"} <= closure
    assert "dag_core/strength.py" in closure  # the guided update itself
    dfid = {str(p.relative_to(ROOT)) for p in import_closure(ROOT, "flows.dfid")}
    assert "dag_core/metrics/fid.py" in dfid


def test_closure_resolves_imports(tmp_path: Path) -> None:
    """Module vs attribute, relative imports, lazy imports and ``import_module`` on a toy tree."""
    files = {
        "flows/__init__.py": "",
        "flows/run.py": "from dag_core import tools, CONST\nfrom . import helper\n",
        "flows/helper.py": "def f():\n    import tasks.lazy\n",
        "flows/unused.py": "",
        "dag_core/__init__.py": "CONST = 1\n",
        "dag_core/tools.py": "import importlib\nimportlib.import_module('dag_core.sub.deep')\n",
        "dag_core/sub/__init__.py": "",
        "dag_core/sub/deep.py": "import numpy\n",
        "tasks/__init__.py": "",
        "tasks/lazy.py": "from .other import *\n",
        "tasks/other.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    got = {str(p.relative_to(tmp_path)) for p in import_closure(tmp_path, "flows.run")}
    assert got == set(files) - {"flows/unused.py"}

    (tmp_path / "tasks/other.py").write_text("def g():\n    from dag_core.moved import h\n")
    with pytest.raises(AssertionError, match=r"tasks/other.py imports dag_core.moved"):
        import_closure(tmp_path, "flows.run")


def _copy_project(dst: Path) -> Path:
    """The project's source files (tracked + new, not ignored; no dvc.lock) in a fresh git repo,
    with the smoke profile as params.yaml."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for rel in listed:
        if (ROOT / rel).is_file() and rel != "dvc.lock":
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    shutil.copy2(ROOT / "profiles" / "smoke.yaml", dst / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def _placeholder_data(project: Path) -> None:
    """Stand-ins for every templated data dep and output that does not exist yet (a folder with
    one file), so that ``dvc commit`` can record a lock without running any stage."""
    params = yaml.safe_load((project / "params.yaml").read_text())

    def value(match: re.Match[str]) -> str:
        node: Any = params
        for key in match.group(0)[2:-1].split("."):
            node = node[key]
        return str(node)

    for spec in load_stages(project).values():
        for kind in ("deps", "outs", "metrics", "plots"):
            for entry in spec.get(kind) or []:
                text = str(next(iter(entry)) if isinstance(entry, Mapping) else entry)
                path = project / TEMPLATE.sub(value, text)
                if TEMPLATE.search(text) and not path.exists():
                    path.mkdir(parents=True)
                    (path / "placeholder").write_text(text)


def _stage_name(key: str) -> str:
    return key.rpartition(":")[2]  # "dvc.yaml:synthesize" in some dvc versions, else "synthesize"


@pytest.mark.slow
def test_editing_the_guided_update_reruns_its_stages(tmp_path: Path) -> None:
    """The real ``dvc status`` on a copy of the project whose lock ``dvc commit`` recorded over
    placeholder data (no stage runs): after an edit of ``dag_core/strength.py`` (an edit, not a
    bare ``touch``: DVC compares content hashes) it reports every stage that imports it,
    ``synthesize`` and ``sweep`` included, and nothing else. The stages fed by synthesize's
    shards (dfid, downstream) follow once synthesize has rerun and its output changed."""
    project = _copy_project(tmp_path / "project")
    _placeholder_data(project)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site")}

    def dvc(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "dvc", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, (
            f"dvc {' '.join(args)}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
        )
        return run.stdout

    def changed() -> dict[str, set[str]]:
        """Stage → the deps ``dvc status`` reports changed."""
        status = json.loads(dvc("status", "--json") or "{}")
        return {
            _stage_name(stage): {
                p for item in items if isinstance(item, dict) for p in item.get("changed deps", {})
            }
            for stage, items in status.items()
        }

    dvc("commit", "--force")
    assert changed() == {}  # the recorded lock matches the copy: everything up to date

    with (project / "dag_core/strength.py").open("a") as f:
        f.write("# an edit of the guided update\n")
    importers = {
        stage
        for stage, spec in load_stages(project).items()
        if project / "dag_core/strength.py" in import_closure(project, stage_entry(stage, spec))
    }
    assert {"synthesize", "sweep"} <= importers
    status = changed()
    assert "synthesize" in status, (
        f"an edit of the guided update does not rerun synthesize: {status}"
    )
    assert status == {stage: {"dag_core/strength.py"} for stage in importers}

    # synthesize reruns and writes new shards (simulated: one new file, then the bookkeeping
    # `dvc repro` does after the command): the stages reading them are now out of date too.
    synthetic = yaml.safe_load((project / "params.yaml").read_text())["synthesize"]["out_dir"]
    (project / synthetic / "rerun").write_text("new shards")
    dvc("commit", "--force", "synthesize")
    after = changed()
    assert "synthesize" not in after
    for stage in ("dfid", "downstream"):
        assert any(Path(p) == Path(synthetic) for p in after.get(stage, ())), (stage, after)
