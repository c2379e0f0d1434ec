"""Depth heads MLP-S / MLP-W on frozen decoder features (paper, "Label-efficient training of depth
predictors").

Each head is a pixel-wise MLP d_t = MLP(g_t, t) on g_t = [f_t(k)]_{k∈blocks}, the decoder features
of the frozen diffusion U-Net (:mod:`dag_core.features`) bilinearly upsampled to the depth map size.
The strong branch MLP-S reads many layers (S = {2, 4, 5, 6, 7}), the weak branch MLP-W a single one
(W = {6}); their disagreement drives depth consistency guidance (paper Eq. 6). Both predict depth in
the normalised space of :class:`dag_core.depthnorm.DepthNorm` and are conditioned on t, because
guidance queries them at every denoising step.

Training (:func:`train_heads`) keeps the U-Net frozen and computes features on the fly for each
batch of noisy images x_t ~ q(x_t | x_0) with t uniform; nothing is cached, and memory is bounded by
regressing only ``pixels_per_image`` randomly chosen valid pixels per image, sampled directly from
the low-resolution feature maps (:func:`dag_core.features.sample_pixels`). The loss is L1 in the
normalised depth space.

One responsibility per module: :mod:`~dag_core.heads.model` (:class:`DepthHead`, the ensemble,
:class:`DepthHeads` with save / load / compatibility checks, :func:`predict_depth`) and
:mod:`~dag_core.heads.training` (:func:`train_heads`, :func:`fit_pixel_heads`, batch streams).
Import from here.
"""

from dag_core.configs.heads import HeadConfig
from dag_core.heads.model import (
    FORMAT_VERSION,
    META_FILE,
    WEIGHTS_FILE,
    DepthHead,
    DepthHeads,
    HeadEnsemble,
    HeadOutputs,
    Upsample,
    member_seed,
    predict_depth,
)
from dag_core.heads.training import (
    Batch,
    Batches,
    fit_pixel_heads,
    random_batches,
    replacement_batches,
    train_heads,
)

__all__ = [
    "FORMAT_VERSION",
    "META_FILE",
    "WEIGHTS_FILE",
    "Batch",
    "Batches",
    "DepthHead",
    "DepthHeads",
    "HeadConfig",
    "HeadEnsemble",
    "HeadOutputs",
    "Upsample",
    "fit_pixel_heads",
    "member_seed",
    "predict_depth",
    "random_batches",
    "replacement_batches",
    "train_heads",
]
