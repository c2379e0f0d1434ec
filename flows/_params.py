"""params.yaml: the one place for every default, read without Prefect or torch.

The project's ``params.yaml`` (beside this package, never the current folder's) holds one group
per DVC stage, complete: every parameter of the stage's flow and every field of its nested
settings. Each flow takes its signature defaults from it (:func:`stage_defaults`), so a
deployment run, a served deployment and ``dvc repro`` start from the same values. A command line
run reads a params file's group (:func:`load_group`: a partial group's keys replace whole keys of
the defaults) and applies ``key=value`` / ``key.sub=value`` overrides (:func:`apply_overrides`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dag_core.errors import DagError

ROOT = Path(__file__).resolve().parents[1]
#: the project's params file: the defaults of every flow
PARAMS_FILE = ROOT / "params.yaml"
# The params groups: one per DVC stage (dvc.yaml order), plus shared YAML-anchor groups.
STAGE_GROUPS = (
    "base_model",
    "label_subset",
    "train_heads",
    "probe_heads",
    "train_prior",
    "synthesize",
    "reference",
    "labellers",
    "dfid",
    "sweep",
    "downstream",
    "report",
)
SHARED_GROUPS = ("depth_norm", "runtime")


def read_params(path: str | Path, extra: Iterable[str] = ()) -> dict[str, Any]:
    """All groups of a params file; DagError if it is missing, not YAML, not a mapping, or has
    a top-level key that is neither a stage group, a shared group nor in ``extra`` (a misspelt
    group)."""
    p = Path(path)
    if not p.is_file():
        raise DagError(f"params file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DagError(f"params file {p} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DagError(f"params file {p} cannot be read: {exc}") from exc
    if not isinstance(data, Mapping):
        raise DagError(f"params file {p} must be a mapping of stage groups, got {data!r}")
    known = (*STAGE_GROUPS, *SHARED_GROUPS, *(e for e in extra if e not in STAGE_GROUPS))
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise DagError(
            f"unknown top-level key(s) {', '.join(unknown)} in {p}; expected stage groups "
            f"{', '.join(known)}"
        )
    return dict(data)


def read_group(path: str | Path, section: str) -> dict[str, Any]:
    """``params[section]`` of a params file as written (DagError if the group is absent: a
    command line never falls back to defaults for a group the file does not have)."""
    data = read_params(path, extra=[section])
    if section not in data:
        raise DagError(
            f"params group '{section}' not found in {path} (no built-in defaults are used)"
        )
    group = data[section]
    if group is None:
        group = {}
    if not isinstance(group, Mapping):
        raise DagError(f"params group '{section}' in {path} must be a mapping, got {group!r}")
    return copy.deepcopy(dict(group))


@functools.cache
def _project_params() -> dict[str, Any]:
    return read_params(PARAMS_FILE)


def stage_defaults(section: str) -> dict[str, Any]:
    """The defaults of stage ``section``: its group of the project's params.yaml (a fresh deep
    copy on every call, so no caller can change another's defaults)."""
    data = _project_params()
    group = data.get(section)
    if not isinstance(group, Mapping):
        raise DagError(f"params group '{section}' not found in {PARAMS_FILE}")
    return copy.deepcopy(dict(group))


def stage_defaults_or_empty(section: str) -> dict[str, Any]:
    """:func:`stage_defaults`, or ``{}`` when the project has no params.yaml or no such group."""
    try:
        return stage_defaults(section)
    except DagError:
        return {}


def load_group(path: str | Path, section: str) -> dict[str, Any]:
    """A stage's params for a run: the file's group over the project's defaults.

    Each key the file's group gives replaces the default's whole value (a partial group such as
    ``{dfid: {synthetic: data/x}}`` keeps every other default); a group the file lacks is an
    error, as is any key no stage knows (checked by the stage's schema).
    """
    return {**stage_defaults_or_empty(section), **read_group(path, section)}


def _coerce(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(group: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``group`` with command-line overrides applied (a new deep copy).

    ``key=value`` replaces a whole key (``value`` is YAML: ``guidance={w_dc: 1}`` replaces the
    whole mapping); ``a.b.c=value`` sets one nested key, creating mappings on the way
    (``guidance.w_dc=0.5``, ``variants.dcg.w_dp=0``, ``runtime.device=cpu``), as
    ``dvc exp run -S stage.a.b=value`` does. What the result holds is checked by the stage's
    schema like any other value.
    """
    out = copy.deepcopy(dict(group))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise DagError(f"override '{item}' is not of the form key=value")
        parts = key.strip().split(".")
        if any(not part for part in parts):
            raise DagError(f"override '{item}': empty part in key '{key}'")
        target = out
        for depth, part in enumerate(parts[:-1]):
            inner = target.get(part)
            if inner is None:
                inner = target[part] = {}
            elif not isinstance(inner, dict):
                where = ".".join(parts[: depth + 1])
                raise DagError(
                    f"override '{item}': {where} is {inner!r}, not a mapping of settings"
                )
            target = inner
        target[parts[-1]] = _coerce(text)
    return out


def changed(group: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``group`` that differ from ``defaults`` (what a deployment must pass)."""
    return {k: v for k, v in group.items() if k not in defaults or defaults[k] != v}
