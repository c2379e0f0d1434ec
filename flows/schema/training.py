"""The schemas of the stages that build the models and data: base model, labelled subset, depth
heads and their probes, depth prior, reference set and estimator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import Field

from dag_core.configs.backbone import TrainConfig
from dag_core.configs.downstream import DownstreamConfig
from dag_core.configs.heads import HeadConfig
from dag_core.configs.prior import PriorConfig
from dag_core.configs.synthesis import DepthDtype
from dag_core.errors import ParamError
from flows.schema import models
from flows.schema.base import (
    In,
    Nested,
    NonNegativeInt,
    Norm,
    OutDir,
    OutFile,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
)
from flows.schema.checks import check_timesteps

#: the sources of :data:`dag_core.sources.SOURCE_KINDS` and the NYU splits of
#: :data:`dag_core.nyu.SPLITS` (a test keeps them equal)
Source = Literal["world", "nyu", "folder"]
NyuSplit = Literal["test", "train", "all"]
Timesteps = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


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


class LabelSubsetParams(StageParams):
    """The params of stage ``label_subset``: the labelled subset.

    One field per parameter of :func:`flows.label_subset.label_subset` (described in params.yaml).
    """

    stage = "label_subset"

    runtime: Runtime
    source: Source
    path: Text | None
    depth_dir: Text | None
    split: NyuSplit
    n: PositiveInt
    n_heldout: NonNegativeInt
    seed: NonNegativeInt
    resolution: PositiveInt | None
    depth_dtype: DepthDtype
    base_model: Text
    out_dir: OutDir

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        if p["source"] != "world" and p["path"] is None:
            raise ParamError(cls.key("path"), None, f"source {p['source']!r} needs a path")

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        for name in ("path", "depth_dir"):
            if p[name] is not None and p["source"] != "world":
                yield In(cls.key(name), p[name])

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        if p["resolution"] is None:  # the pairs take the base model's sample size
            models.base_model_timesteps(cls.key("base_model"), p["base_model"])


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


class ReferenceParams(StageParams):
    """The params of stage ``reference``: the reference sets and estimator.

    One field per parameter of :func:`flows.reference.reference` (described in params.yaml).
    """

    stage = "reference"

    runtime: Runtime
    resolution: PositiveInt
    n_train: PositiveInt
    n_test: PositiveInt
    n_floor: NonNegativeInt
    data_dir: OutDir
    out_dir: OutDir
    norm: Norm
    config: Annotated[dict[str, Any], Nested(DownstreamConfig)]
