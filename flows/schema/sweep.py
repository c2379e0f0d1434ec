"""Stage ``sweep``'s params schema (:mod:`flows.sweep`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field, PlainValidator

from dag_core.configs.guidance import GuidanceConfig
from dag_core.configs.sweep import Number, check_remedies, check_sweep, mode_scales, point_settings
from dag_core.configs.synthesis import Eta, Sampler, SynthesisSpec, guidance_config
from dag_core.configs.types import Seed
from dag_core.errors import ParamError
from dag_core.validation import check_value
from flows.schema import models
from flows.schema.base import (
    Extractor,
    In,
    NBoot,
    OptionalOutFile,
    OutDir,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
)
from flows.schema.checks import check_floor
from flows.schema.sampling import check_sampling

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
        check_sweep(p["modes"], p["scales"], p["windows"], p["num_samples"], cls.stage)
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
