"""The schemas of the evaluation stages: dFID and the downstream depth networks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from dag_core.configs.downstream import DownstreamConfig
from dag_core.errors import ParamError
from flows.schema import models
from flows.schema.base import (
    Extractor,
    In,
    NBoot,
    Nested,
    Norm,
    OutDir,
    OutFile,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
    dataset_rows,
)
from flows.schema.checks import check_floor, synthetic_variants


class DfidParams(StageParams):
    """The params of stage ``dfid``: dFID, FID and consistency of the synthetic variants.

    One field per parameter of :func:`flows.dfid.dfid` (described in params.yaml).
    """

    stage = "dfid"

    runtime: Runtime
    synthetic: Text
    variants: Annotated[list[Text], Field(min_length=1)] | None
    real: Text
    estimator: Text
    extractor: Extractor
    batch_size: PositiveInt
    max_samples: PositiveInt | None
    n_boot: NBoot
    reference_variant: Text | None
    floor: Text | None
    metrics_file: OutFile

    @classmethod
    def variant_names(cls, p: dict[str, Any]) -> list[str]:
        return p["variants"] if p["variants"] is not None else synthetic_variants(p["synthetic"])

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        ref = p["reference_variant"]
        if p["variants"] is not None and ref is not None and ref not in p["variants"]:
            raise ParamError(cls.key("reference_variant"), ref, f"is not among {p['variants']}")

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        variants = cls.variant_names(p)
        if not variants:
            raise ParamError(cls.key("synthetic"), p["synthetic"], "holds no variant folders")
        for v in variants:
            yield In(
                cls.key("synthetic"), str(Path(p["synthetic"]) / v), "dataset", (), "synthesize"
            )
        yield In(cls.key("real"), p["real"], "datasets", (), "reference")
        if p["floor"] is not None:
            yield In(cls.key("floor"), p["floor"], "dataset", (), "reference")

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        variants = cls.variant_names(p)
        ref = p["reference_variant"]
        if ref is not None and ref not in variants:
            raise ParamError(cls.key("reference_variant"), ref, f"is not among {variants}")
        models.check_depth_net(cls.key("estimator"), p["estimator"])
        if p["floor"] is not None:
            sizes = [dataset_rows(Path(p["synthetic"]) / v) for v in variants]
            n = max(min(s, p["max_samples"] or s) for s in sizes)
            check_floor(cls.key("floor"), p["floor"], n)


class DownstreamParams(StageParams):
    """The params of stage ``downstream``: the downstream depth networks.

    One field per parameter of :func:`flows.downstream.downstream` (described in params.yaml).
    """

    stage = "downstream"

    runtime: Runtime
    train_sets: Annotated[dict[str, Text], Field(min_length=1)]
    world_test: Text
    nyu_path: Text | None
    nyu_median_scaling: bool
    paired_reference: Text | None
    n_boot: NBoot
    runs: PositiveInt
    models_dir: OutDir
    norm: Norm
    config: Annotated[dict[str, Any], Nested(DownstreamConfig)]
    metrics_file: OutFile
    table_file: OutFile

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        ref, sets = p["paired_reference"], p["train_sets"]
        if ref is not None and ref not in sets:
            raise ParamError(
                cls.key("paired_reference"),
                ref,
                f"is not one of the train_sets ({', '.join(sets)})",
            )

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        for name, path in p["train_sets"].items():
            yield In(cls.key(f"train_sets.{name}"), path, "datasets")
        yield In(cls.key("world_test"), p["world_test"], "datasets", (), "reference")
        if p["nyu_path"] is not None:
            yield In(cls.key("nyu_path"), p["nyu_path"])
