"""Stage ``dfid``'s params schema (:mod:`flows.dfid`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from dag_core.errors import ParamError
from flows.schema import models
from flows.schema.base import (
    Extractor,
    In,
    NBoot,
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
