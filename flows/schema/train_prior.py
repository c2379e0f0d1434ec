"""Stage ``train_prior``'s params schema (:mod:`flows.train_prior`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from dag_core.configs.prior import PriorConfig
from flows.schema import models
from flows.schema.base import (
    In,
    Nested,
    NonNegativeInt,
    OutDir,
    Runtime,
    StageParams,
    Text,
)


class TrainPriorParams(StageParams):
    """The params of stage ``train_prior``: the depth prior.

    One field per parameter of :func:`flows.train_prior.train_prior` (described in params.yaml).
    """

    stage = "train_prior"

    runtime: Runtime
    labelled: Text
    heads: Text
    out_dir: OutDir
    extra_world: NonNegativeInt
    extra_depth: Text | None
    config: Annotated[dict[str, Any], Nested(PriorConfig)]

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        yield In(cls.key("labelled"), p["labelled"], "datasets", ("train",), "label_subset")
        if p["extra_depth"] is not None:
            yield In(cls.key("extra_depth"), p["extra_depth"], "datasets")

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        models.heads_info(cls.key("heads"), p["heads"])
