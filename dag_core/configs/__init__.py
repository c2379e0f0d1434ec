"""The settings of every component, importable without torch (for checking params early).

One dataclass per component, each checked on construction (:mod:`dag_core.validation`), each
with the embedded default's params.yaml values as its defaults (a test compares them). The
modules that use them re-export them under their old names (``dag_core.guidance.GuidanceConfig``
is :class:`dag_core.configs.guidance.GuidanceConfig`).
"""

from dag_core.configs.backbone import TrainConfig
from dag_core.configs.downstream import DownstreamConfig
from dag_core.configs.guidance import GuidanceConfig
from dag_core.configs.heads import HeadConfig
from dag_core.configs.prior import PriorConfig
from dag_core.configs.runtime import RuntimeSettings
from dag_core.configs.synthesis import SynthesisSpec
from dag_core.depthnorm import DepthNorm

__all__ = [
    "DepthNorm",
    "DownstreamConfig",
    "GuidanceConfig",
    "HeadConfig",
    "PriorConfig",
    "RuntimeSettings",
    "SynthesisSpec",
    "TrainConfig",
]
