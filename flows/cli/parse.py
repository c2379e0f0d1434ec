"""The command line's arguments and the stage's params group, read and checked before Prefect."""

from __future__ import annotations

import argparse
from typing import Any

from flows._params import apply_overrides, load_group
from flows.schema.base import StageParams, validate

#: the params file a command line reads by default (DVC runs stages in the project folder)
DEFAULT_PARAMS = "params.yaml"


def parser(section: str, doc: str | None = None) -> argparse.ArgumentParser:
    """The arguments of ``python -m flows.<section>``: ``--params``, ``--serve`` and overrides."""
    parser = argparse.ArgumentParser(prog=f"python -m flows.{section}", description=doc)
    parser.add_argument(
        "--params", default=DEFAULT_PARAMS, help=f"params file (default: {DEFAULT_PARAMS})"
    )
    parser.add_argument(
        "--serve", metavar="NAME", help="serve the flow as a deployment NAME instead of running"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key=value or key.sub=value overrides of the stage's params (values are YAML)",
    )
    return parser


def stage_params(
    schema: type[StageParams],
    params_file: str,
    overrides: list[str],
    *,
    files: bool = True,
    mark: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The group a command line asks for (params file, then overrides) and its checked,
    resolved form (:func:`flows.schema.base.validate`)."""
    group = apply_overrides(load_group(params_file, schema.stage), overrides)
    return group, validate(schema, group, files=files, mark=mark)
