"""Stage ``base_model``'s params schema (:mod:`flows.base_model`)."""

from __future__ import annotations

from typing import Annotated, Any

from dag_core.configs.backbone import TrainConfig
from flows.schema import models
from flows.schema.base import (
    Nested,
    NonNegativeInt,
    OutDir,
    Runtime,
    StageParams,
    Text,
)


class BaseModelParams(StageParams):
    """The params of stage ``base_model``: the frozen base model.

    One field per parameter of :func:`flows.base_model.base_model` (described in params.yaml).
    """

    stage = "base_model"

    runtime: Runtime
    pretrained: Text | None
    out_dir: OutDir
    train: Annotated[dict[str, Any], Nested(TrainConfig)]
    render_workers: NonNegativeInt

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        if p["pretrained"] is not None:  # a local diffusers folder, or a hub id it can get
            models.base_model_timesteps(cls.key("pretrained"), p["pretrained"])
