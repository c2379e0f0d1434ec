"""Stage ``synthesize``'s params schema (:mod:`flows.synthesize`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from dag_core.configs.guidance import GuidanceConfig
from dag_core.configs.synthesis import Eta, Sampler, SynthesisSpec, guidance_config
from dag_core.configs.types import DepthDtype, Seed
from dag_core.errors import ParamError
from flows._params import stage_defaults_or_empty
from flows.schema.base import (
    License,
    Nested,
    OptionalOutDir,
    OptionalOutFile,
    OutDir,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
)
from flows.schema.checks import same_path
from flows.schema.sampling import check_sampling
from flows.schema.task_runner import TaskRunnerConfig


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
    license: License
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
