"""Stage ``reference``'s params schema (:mod:`flows.reference`)."""

from __future__ import annotations

from typing import Annotated, Any

from dag_core.configs.downstream import DownstreamConfig
from flows.schema.base import (
    Extractor,
    License,
    Nested,
    NonNegativeInt,
    Norm,
    OutDir,
    PositiveInt,
    Runtime,
    StageParams,
)


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
    license: License
    out_dir: OutDir
    norm: Norm
    config: Annotated[dict[str, Any], Nested(DownstreamConfig)]
    extractor: Extractor
    fid_batch_size: PositiveInt
