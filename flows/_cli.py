"""Shared command line of the stage flows: ``python -m flows.<stage> [--params F] [key=value]``.

Each stage reads its own group of ``params.yaml`` (DVC's convention, grouped by stage), lets
``key=value`` overrides on the command line win, checks the names against the flow's typed
signature, and runs the flow. Bad input (a :class:`~dag_core.errors.DagError`) ends the process
with one line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dag_core.errors import DagError


def load_params(path: str | Path, section: str) -> dict[str, Any]:
    """Return ``params[section]`` from a params.yaml file (empty dict when the group is absent)."""
    p = Path(path)
    if not p.is_file():
        raise DagError(f"params file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DagError(f"params file {p} is not valid YAML: {exc}") from exc
    group = data.get(section) or {}
    if not isinstance(group, Mapping):
        raise DagError(f"params group '{section}' in {p} must be a mapping, got {group!r}")
    return dict(group)


def check_runtime(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a stage's ``runtime`` group (device available, known settings) before any output
    is touched; returns it as a plain dict for the stage's tasks."""
    from dag_core.runtime import RuntimeConfig

    RuntimeConfig.from_params(runtime).resolve_device()
    return dict(runtime or {})


def _coerce(text: str) -> Any:
    return yaml.safe_load(text)


def flow_kwargs(fn: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Check the names against the flow signature: a typo is an error, never silently ignored."""
    sig = inspect.signature(getattr(fn, "fn", fn))
    unknown = sorted(set(params) - set(sig.parameters))
    if unknown:
        raise DagError(
            f"unknown parameter(s) {', '.join(unknown)} for flow '{getattr(fn, 'name', fn)}'; "
            f"expected some of: {', '.join(sig.parameters)}"
        )
    return dict(params)


def run_stage(fn: Callable[..., Any], section: str, argv: list[str] | None = None) -> Any:
    """Entry point used by each ``flows/<stage>.py`` ``__main__``."""
    parser = argparse.ArgumentParser(prog=f"python -m flows.{section}", description=fn.__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the stage's params")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params, section)
        for item in args.overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise DagError(f"override '{item}' is not of the form key=value")
            params[key] = _coerce(value)
        kwargs = flow_kwargs(fn, params)
        if "runtime" in kwargs:  # device checked before a Prefect run (or its server) starts
            check_runtime(kwargs["runtime"])
        return fn(**kwargs)
    except DagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
