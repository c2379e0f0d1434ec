"""Stage ``label_subset``'s params schema (:mod:`flows.label_subset`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from dag_core.configs.types import DepthDtype
from dag_core.errors import DagError, ParamError
from dag_core.filechecks import FileProblem, check_depth_png, folder_pairs
from flows.schema import models
from flows.schema.base import (
    In,
    License,
    NonNegativeInt,
    OutDir,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
)

#: the sources of :data:`dag_core.sources.SOURCE_KINDS` and the NYU splits of
#: :data:`dag_core.nyu.SPLITS` (a test keeps them equal)
Source = Literal["world", "nyu", "folder"]
NyuSplit = Literal["test", "train", "all"]


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
    license: License
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
        if p["source"] == "folder" and p["depth_dir"] is not None:
            cls.check_folder(p["path"], p["depth_dir"])
        if p["resolution"] is None:  # the pairs take the base model's sample size
            models.base_model_timesteps(cls.key("base_model"), p["base_model"])

    @classmethod
    def check_folder(cls, path: str, depth_dir: str) -> None:
        """A ``folder`` source: every image has a depth map, and every depth PNG is 16-bit by
        its header (:func:`dag_core.filechecks.folder_pairs`, :func:`~dag_core.filechecks.
        check_depth_png`: the source's own checks, without decoding a pixel)."""
        try:
            pairs = folder_pairs(path, depth_dir)
        except DagError as exc:
            missing_depth = str(exc).startswith("no depth map")
            name, value = ("depth_dir", depth_dir) if missing_depth else ("path", path)
            raise ParamError(cls.key(name), value, str(exc)) from None
        for _, depth in pairs:
            if depth.suffix == ".png":
                try:
                    check_depth_png(depth)
                except FileProblem as exc:
                    raise exc.param_error(cls.key("depth_dir"), depth_dir) from None
