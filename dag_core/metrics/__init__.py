"""Evaluation metrics: monocular depth errors (:mod:`.depth`) and FID / dFID (:mod:`.fid`).

The FID names are loaded on first use (PEP 562), so depth-only users do not import
torch-fidelity; loading :mod:`dag_core.metrics.fid` registers the offline fid-helper Inception-v3
extractor with torch-fidelity. The function ``fid`` is reached as ``dag_core.metrics.fid.fid``
(the package attribute ``fid`` is the submodule).
"""

from __future__ import annotations

import importlib
from typing import Any

from dag_core.metrics.depth import (
    EIGEN_CROP,
    METRIC_NAMES,
    DepthMetricAccumulator,
    depth_metrics,
)

_FID_EXPORTS = (
    "FIDHELPER_EXTRACTOR",
    "TORCH_FIDELITY_EXTRACTOR",
    "depth_to_rgb8",
    "dfid",
    "resolve_extractor",
)

__all__ = [
    "EIGEN_CROP",
    "METRIC_NAMES",
    "DepthMetricAccumulator",
    "depth_metrics",
    *_FID_EXPORTS,
]


def __getattr__(name: str) -> Any:
    if name in _FID_EXPORTS:
        return getattr(importlib.import_module("dag_core.metrics.fid"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
