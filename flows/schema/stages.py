"""Every stage's schema by name, and the checks that need all of them (the pipeline, tests).

Every field of a schema is required: params.yaml lists every parameter of every stage (a
partial params file is merged over it first, :func:`flows._params.load_group`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from dag_core.errors import DagError
from flows._params import STAGE_GROUPS, load_group
from flows.schema.base import StageParams, validate
from flows.schema.base_model import BaseModelParams
from flows.schema.dfid import DfidParams
from flows.schema.downstream import DownstreamParams
from flows.schema.label_subset import LabelSubsetParams
from flows.schema.labellers import LabellersParams
from flows.schema.probe_heads import ProbeHeadsParams
from flows.schema.reference import ReferenceParams
from flows.schema.report import ReportParams
from flows.schema.sweep import SweepParams
from flows.schema.synthesize import SynthesizeParams
from flows.schema.train_heads import TrainHeadsParams
from flows.schema.train_prior import TrainPriorParams

SCHEMAS: dict[str, type[StageParams]] = {
    s.stage: s
    for s in (
        BaseModelParams,
        LabelSubsetParams,
        TrainHeadsParams,
        ProbeHeadsParams,
        TrainPriorParams,
        SynthesizeParams,
        ReferenceParams,
        LabellersParams,
        DfidParams,
        SweepParams,
        DownstreamParams,
        ReportParams,
    )
}
assert tuple(SCHEMAS) == STAGE_GROUPS


def validate_stage(stage: str, params: Mapping[str, Any], **kwargs: bool) -> dict[str, Any]:
    """:func:`flows.schema.base.validate` of stage ``stage`` (by name)."""
    if stage not in SCHEMAS:
        raise DagError(f"unknown stage '{stage}'; expected one of {', '.join(SCHEMAS)}")
    return validate(SCHEMAS[stage], params, **kwargs)


def check_stages(stages: list[str] | None) -> list[str]:
    """The stages to run (default: all, in dvc.yaml order); DagError naming any unknown one."""
    chosen = list(stages or STAGE_GROUPS)
    unknown = [s for s in chosen if s not in STAGE_GROUPS]
    if unknown:
        names = ", ".join(STAGE_GROUPS)
        raise DagError(f"unknown stage(s) {', '.join(unknown)}; expected some of {names}")
    return chosen


def check_pipeline(argv: list[str]) -> argparse.Namespace:
    """Parse ``python -m flows.pipeline [--params F] [stages...]`` and check every chosen
    stage's params (values and output paths; each stage checks its inputs as it starts, since
    earlier stages write them); returns the parsed arguments."""
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    args = parser.parse_args(argv)
    for name in check_stages(args.stages):
        validate_stage(name, load_group(args.params, name), files=False)
    return args
