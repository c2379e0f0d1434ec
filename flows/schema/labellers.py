"""Stage ``labellers``' params schema (:mod:`flows.labellers`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel, Field

from dag_core.configs.downstream import DownstreamConfig
from dag_core.configs.heads import HeadConfig
from dag_core.configs.labeller import LabellerSpec, check_specs
from dag_core.errors import DagError, ParamError
from flows.schema import models
from flows.schema.base import (
    STRICT,
    In,
    NBoot,
    Nested,
    Norm,
    OutFile,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
)


class Ceiling(BaseModel):
    """Refits on N exactly labelled world pairs (fresh scenes): the features' ceiling."""

    model_config = STRICT

    n: list[PositiveInt]
    labellers: list[Text]
    runs: PositiveInt
    min_epochs: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class LabellersParams(StageParams):
    """The params of stage ``labellers``: the labeller record.

    One field per parameter of :func:`flows.labellers.labellers` (described in params.yaml).
    """

    stage = "labellers"

    runtime: Runtime
    base_model: Text
    labelled: Text
    heads: Text
    test: Text
    norm: Norm
    head_config: Annotated[dict[str, Any], Nested(HeadConfig)]
    net_config: Annotated[dict[str, Any], Nested(DownstreamConfig)]
    labellers: Annotated[dict[str, dict[str, Any]], Field(min_length=1)]
    reference: Text
    runs: PositiveInt
    ceiling: Ceiling
    n_boot: NBoot
    metrics_file: OutFile
    table_file: OutFile

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        specs = {}
        for name, value in p["labellers"].items():
            key = f"{cls.key('labellers')}.{name}"
            try:
                specs[name] = LabellerSpec.parse(name, value, p["heads"])
                if specs[name].kind == "fit":
                    HeadConfig.from_params({**p["head_config"], **value["fit"]})
                if specs[name].kind == "net":
                    DownstreamConfig.from_params({**p["net_config"], **(value["net"] or {})})
            except ParamError as exc:  # a config's own key: where the override sits
                kind = specs[name].kind
                raise exc.rebased(exc.key.split(".")[0], f"{key}.{kind}") from None
            except DagError as exc:
                raise DagError(f"{key}: {exc}") from None
        check_specs(specs, [p["reference"]], cls.key("reference"))
        check_specs(specs, p["ceiling"]["labellers"], cls.key("ceiling"))

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        yield In(
            cls.key("labelled"), p["labelled"], "datasets", ("train", "heldout"), "label_subset"
        )
        yield In(cls.key("test"), p["test"], "dataset", (), "reference")

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        models.heads_info(cls.key("heads"), p["heads"])
