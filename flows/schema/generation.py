"""The schemas of the sampling stages: guided synthesis and the guidance sweep."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainValidator

from dag_core.configs.guidance import GuidanceConfig
from dag_core.configs.sweep import (
    Number,
    check_remedies,
    check_sweep,
    mode_scales,
    point_settings,
)
from dag_core.configs.synthesis import (
    DepthDtype,
    Eta,
    Sampler,
    Seed,
    SynthesisSpec,
    guidance_config,
)
from dag_core.errors import ParamError
from dag_core.validation import check_value
from flows._params import stage_defaults_or_empty
from flows.schema import models
from flows.schema.base import (
    Extractor,
    In,
    NBoot,
    Nested,
    OptionalOutDir,
    OptionalOutFile,
    OutDir,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
)
from flows.schema.checks import check_floor, check_sampling, same_path
from flows.schema.task_runner import TaskRunnerConfig

#: per-point sweep settings: the sweep sets them, not its shared guidance
POINT_KEYS = ("w_dc", "w_dp", "scale_mode", "window")


def _scales(value: Any) -> Any:
    """``[w, ...]`` for every mode, or ``{mode: [w, ...]}``."""
    groups = value.items() if isinstance(value, dict) else [("", value)]
    for mode, scales in groups:
        if not isinstance(mode, str) or not isinstance(scales, list):
            raise ValueError("expected a list of numbers or a mapping {mode: [numbers]}")
        for i, w in enumerate(scales):
            check_value(Number, w, f"{mode}[{i}]" if mode else f"[{i}]")
    return value


class SynthesizeParams(StageParams):
    """The params of stage ``synthesize``, guided synthesis (:func:`flows.synthesize.synthesize`;
    each parameter is described in params.yaml). ``metrics_file`` and ``report_dir`` follow
    ``out_dir`` (:meth:`resolve`)."""

    stage = "synthesize"

    runtime: Runtime
    base_model: Text
    heads: Text
    prior: Text | None
    out_dir: OutDir
    num_samples: PositiveInt
    batch_size: PositiveInt
    shard_size: PositiveInt
    seed: Seed
    sampler: Sampler
    steps: PositiveInt
    eta: Eta
    depth_dtype: DepthDtype
    guidance: Annotated[dict[str, Any], Nested(GuidanceConfig)]
    variants: Annotated[dict[str, dict[str, Any] | None], Field(min_length=1)]
    task_runner: Annotated[dict[str, Any], Nested(TaskRunnerConfig)]
    metrics_file: OptionalOutFile
    report_dir: OptionalOutDir

    @classmethod
    def settings(cls, p: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Each variant's guidance settings: the shared ``guidance`` and its overrides."""
        return {name: {**p["guidance"], **(over or {})} for name, over in p["variants"].items()}

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        spec = {k: p[k] for k in ("num_samples", "shard_size", "seed", "sampler", "steps", "eta")}
        SynthesisSpec.from_params(
            {**spec, "depth_dtype": p["depth_dtype"], "variants": cls.settings(p)}, cls.stage
        )

    @classmethod
    def resolve(cls, p: dict[str, Any]) -> dict[str, Any]:
        """A run into another ``out_dir`` than params.yaml's keeps its metrics and report beside
        its data (``{out_dir}/_metrics.json``, ``{out_dir}/_report``) unless they were set to
        other paths than params.yaml's: it never writes over the default run's."""
        defaults = stage_defaults_or_empty(cls.stage)
        if same_path(p["out_dir"], defaults.get("out_dir")):
            return p
        for name, beside in (("metrics_file", "_metrics.json"), ("report_dir", "_report")):
            if p[name] is not None and same_path(p[name], defaults.get(name)):
                p[name] = str(Path(p["out_dir"]) / beside)
        return p

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        if p["task_runner"].get("kind") == "dask" and not os.environ.get("PREFECT_API_URL"):
            raise ParamError(
                cls.key("task_runner.kind"),
                "dask",
                "needs a Prefect server: start `prefect server start` and set PREFECT_API_URL "
                "(ephemeral mode would start one server per Dask worker)",
            )
        configs = {n: guidance_config(n, s) for n, s in cls.settings(p).items()}
        check_sampling(cls.key, p, [c for c in configs.values() if c.enabled])
        if any(c.w_dp > 0 for c in configs.values()) and p["prior"] is None:
            dpg = next(n for n, c in configs.items() if c.w_dp > 0)
            raise ParamError(cls.key("prior"), None, f"variant '{dpg}' has w_dp > 0")


class SweepParams(StageParams):
    """The params of stage ``sweep``: the guidance sweep.

    One field per parameter of :func:`flows.sweep.sweep` (described in params.yaml).
    """

    stage = "sweep"

    runtime: Runtime
    base_model: Text
    heads: Text
    prior: Text | None
    real: Text
    estimator: Text
    extractor: Extractor
    fid_batch_size: PositiveInt
    n_boot: NBoot
    num_samples: Annotated[int, Field(ge=2)]
    batch_size: PositiveInt
    seed: Seed
    sampler: Sampler
    steps: PositiveInt
    eta: Eta
    guidance: dict[str, Any]
    modes: Annotated[list[Text], Field(min_length=1)]
    scales: Annotated[list[float] | dict[str, list[float]], PlainValidator(_scales)]
    windows: Annotated[
        list[Annotated[list[float], Field(min_length=2, max_length=2)]], Field(min_length=1)
    ]
    remedies: dict[str, Any]
    floor: Text | None
    out_dir: OutDir
    figure: OptionalOutFile

    @classmethod
    def points(cls, p: dict[str, Any]) -> list[GuidanceConfig]:
        """The guidance of every guided point (w > 0) of the sweep."""
        out = []
        for mode in p["modes"]:
            for window in p["windows"]:
                for w in mode_scales(p["scales"], mode):
                    if w:
                        out.append(
                            guidance_config("point", point_settings(p["guidance"], mode, window, w))
                        )
        for name, remedy in p["remedies"].items():
            for w in remedy["scales"]:
                if w:
                    settings = point_settings(
                        p["guidance"], p["modes"][0], p["windows"][0], w, remedy.get("guidance")
                    )
                    out.append(guidance_config(name, settings))
        return out

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        shared = p["guidance"]
        for name in POINT_KEYS:
            if name in shared:
                raise ParamError(
                    cls.key(f"guidance.{name}"),
                    shared[name],
                    "is set by each sweep point (scales, modes, windows); "
                    "use a remedy for other values",
                )
        GuidanceConfig.from_params(shared, cls.key("guidance"))
        check_sweep(p["modes"], p["scales"], p["windows"], p["num_samples"])
        check_remedies(p["remedies"], shared, p["modes"], p["windows"], cls.key("remedies"))
        spec = {k: p[k] for k in ("num_samples", "seed", "sampler", "steps", "eta")}
        unguided = {"w0": {"w_dc": 0.0, "w_dp": 0.0}}
        SynthesisSpec.from_params(
            {**spec, "shard_size": p["num_samples"], "variants": unguided}, cls.stage
        )

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        yield In(cls.key("real"), p["real"], "datasets", (), "reference")
        if p["floor"] is not None:
            yield In(cls.key("floor"), p["floor"], "dataset", (), "reference")

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        points = cls.points(p)
        if any(c.w_dp > 0 for c in points) and p["prior"] is None:
            raise ParamError(cls.key("prior"), None, "the sweep's points with w_dp > 0 need it")
        check_sampling(cls.key, p, points)
        models.check_depth_net(cls.key("estimator"), p["estimator"])
        if p["floor"] is not None:
            check_floor(cls.key("floor"), p["floor"], p["num_samples"])
