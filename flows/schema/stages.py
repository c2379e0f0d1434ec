"""The params schema of each stage: one field per flow parameter, typed and constrained.

Every field is required: params.yaml lists every parameter of every stage (a partial params
file is merged over it first, :func:`flows._params.load_group`). The settings dataclasses of
:mod:`dag_core.configs` check their own fields; rules between parameters, the inputs a stage
reads and the cheap model checks are the hooks of :class:`~flows.schema.base.StageParams`.
"""

from __future__ import annotations

from flows.schema.base import StageParams
from flows.schema.evaluation import DfidParams, DownstreamParams
from flows.schema.generation import SweepParams, SynthesizeParams
from flows.schema.training import (
    BaseModelParams,
    LabelSubsetParams,
    ProbeHeadsParams,
    ReferenceParams,
    TrainHeadsParams,
    TrainPriorParams,
)

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
        DfidParams,
        SweepParams,
        DownstreamParams,
    )
}
