"""The params schema of every stage, and THE check of a stage's params (:func:`validate_stage`).

The same check runs twice for a command-line run: in ``python -m flows.<stage>`` before the flow
module (Prefect, torch) is imported, so bad input costs a second and prints one ``error:`` line;
and first thing inside the flow, so a deployment run (work pool, served) is checked the same
way. Importing this package imports neither Prefect nor torch.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from dag_core.errors import DagError
from dag_core.validation import validate_model
from flows.schema.base import StageParams, check_input, check_output
from flows.schema.checks import synthetic_variants
from flows.schema.stages import SCHEMAS

__all__ = ["SCHEMAS", "StageParams", "synthetic_variants", "validate_stage"]

#: params whose files a command line checked just before starting the flow: the flow's own check
#: of the same params, next, does not hash the same datasets again (each mark is used once, so a
#: served deployment or a pipeline checks every run afresh)
_FILES_CHECKED: set[str] = set()


def validate_stage(
    stage: str, params: Mapping[str, Any], *, files: bool = True, mark: bool = False
) -> dict[str, Any]:
    """Check a stage's whole params group; return it resolved, as a new deep copy.

    In order, each failure one :class:`~dag_core.errors.DagError` naming the dotted key and its
    value: names and types of every parameter (strict; unknown and missing ones), the settings
    of every nested group (``guidance``, ``config``, ``runtime``, ...), rules between values,
    then every output path (writable; a file where a file goes). With ``files``: every input
    (present; shard datasets whole, checksums included) and the cheap model checks (model
    folders of the right kind, steps and τ within their schedules).

    Args:
        stage: The stage (a params group name).
        params: Its params, complete (params.yaml's group with the run's changes).
        files: Also check inputs and models (off for a pipeline's up-front check, whose earlier
            stages write the later ones' inputs).
        mark: The flow is started next in this process with the returned params: its own
            check skips the files checked here.

    Returns:
        The params with values that depend on others filled in (e.g. ``synthesize``'s metrics
        and report beside a non-default ``out_dir``).
    """
    if stage not in SCHEMAS:
        raise DagError(f"unknown stage '{stage}'; expected one of {', '.join(SCHEMAS)}")
    schema = SCHEMAS[stage]
    p = copy.deepcopy(dict(params))
    validate_model(schema, p, stage, noun="parameter")
    for name, cls in schema.nested().items():
        cls.from_params(p[name], schema.key(name))
    schema.check(p)
    p = schema.resolve(p)
    for name, kind in schema.outputs().items():
        check_output(schema.key(name), p[name], kind)
    if files:
        digest = f"{stage}:{json.dumps(p, sort_keys=True, default=str)}"
        if digest in _FILES_CHECKED:
            _FILES_CHECKED.discard(digest)
        else:
            for item in schema.inputs(p):
                check_input(item)
            schema.check_models(p)
            if mark:
                _FILES_CHECKED.add(digest)
    return copy.deepcopy(p)
