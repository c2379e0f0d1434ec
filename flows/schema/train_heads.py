"""Stage ``train_heads``'s params schema (:mod:`flows.train_heads`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field

from dag_core.configs.heads import HeadConfig
from flows.schema.base import (
    In,
    Nested,
    Norm,
    OutDir,
    OutFile,
    Runtime,
    StageParams,
    Text,
)
from flows.schema.checks import check_timesteps

#: timesteps to evaluate at
Timesteps = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class TrainHeadsParams(StageParams):
    """The params of stage ``train_heads``: the depth heads MLP-S / MLP-W.

    One field per parameter of :func:`flows.train_heads.train_heads` (described in params.yaml).
    """

    stage = "train_heads"

    runtime: Runtime
    base_model: Text
    labelled: Text
    out_dir: OutDir
    norm: Norm
    config: Annotated[dict[str, Any], Nested(HeadConfig)]
    eval_t: Timesteps
    metrics_file: OutFile
    plots_file: OutFile

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        yield In(
            cls.key("labelled"), p["labelled"], "datasets", ("train", "heldout"), "label_subset"
        )

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        check_timesteps(cls.key, p["base_model"], "eval_t", p["eval_t"])
