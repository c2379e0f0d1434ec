"""The depth network: the downstream task's estimator and the dFID's reference estimator.

One small conv–GroupNorm–SiLU U-Net (:class:`DepthNet`) serves two jobs: it is the network every
downstream training set trains (:mod:`dag_core.downstream`), and a trained one is the reference
estimator whose depth on generated and real images the dFID compares (:mod:`dag_core.metrics`).
It lives below both, so neither imports the other: :mod:`~dag_core.depthnet.model`
(:class:`DepthNet`, :func:`seeded_depth_net`), :mod:`~dag_core.depthnet.persistence`
(safetensors + JSON) and :mod:`~dag_core.depthnet.predict` (:func:`predict_depth`, metres).
"""

from dag_core.depthnet.model import ConvBlock, DepthNet, seeded_depth_net
from dag_core.depthnet.persistence import (
    FORMAT_VERSION,
    META_FILE,
    WEIGHTS_FILE,
    load_depth_net,
    save_depth_net,
)
from dag_core.depthnet.predict import inference_size, predict_depth

__all__ = [
    "FORMAT_VERSION",
    "META_FILE",
    "WEIGHTS_FILE",
    "ConvBlock",
    "DepthNet",
    "inference_size",
    "load_depth_net",
    "predict_depth",
    "save_depth_net",
    "seeded_depth_net",
]
