"""Stage ``downstream``'s params schema (:mod:`flows.downstream`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import Field

from dag_core.configs.downstream import DownstreamConfig
from dag_core.errors import ParamError
from flows.schema.base import (
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
)


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
