"""Stage ``probe_heads``'s params schema (:mod:`flows.probe_heads`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field

from dag_core.configs.heads import HeadConfig
from flows.schema import models
from flows.schema.base import (
    In,
    Nested,
    NonNegativeInt,
    Norm,
    OutDir,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
)
from flows.schema.checks import check_timesteps
from flows.schema.train_heads import Timesteps


class ProbeHeadsParams(StageParams):
    """The params of stage ``probe_heads``: the per-layer depth probes.

    One field per parameter of :func:`flows.probe_heads.probe_heads` (described in params.yaml).
    """

    stage = "probe_heads"

    runtime: Runtime
    base_model: Text
    labelled: Text
    heads: Text
    t: NonNegativeInt
    layers: Annotated[list[NonNegativeInt], Field(min_length=1)] | None
    ns: Annotated[list[PositiveInt], Field(min_length=1)]
    norm: Norm
    config: Annotated[dict[str, Any], Nested(HeadConfig)]
    eval_t: Timesteps
    out_dir: OutDir

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        yield In(
            cls.key("labelled"), p["labelled"], "datasets", ("train", "heldout"), "label_subset"
        )

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        check_timesteps(cls.key, p["base_model"], "eval_t", [*p["eval_t"], p["t"]])
        models.heads_info(cls.key("heads"), p["heads"])
