"""Labels from the depth heads: d^S at t = 0, as synthesis stores them, or averaged at test time.

Synthesis labels a generated image with MLP-S on the frozen U-Net's features of the clean image
(:func:`dag_core.sampling.final_label`, t = 0). :func:`average_label` is the test-time average
ddpm-segmentation takes over timesteps: d^S of x_t ~ q(x_t | x_0) averaged (in normalised depth)
over ``draws`` noise draws at each t of ``t_values`` (t = 0 is the clean image itself, once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import Tensor

from dag_core.errors import DagError
from dag_core.features import FeatureExtractor, noise_images
from dag_core.heads.model import DepthHeads


def average_label(
    unet: UNet2DModel,
    scheduler: Any,
    heads: DepthHeads,
    x_0: Tensor,
    t_values: Sequence[int] = (0,),
    draws: int = 1,
    seed: int = 0,
) -> Tensor:
    """d^S in metres (B, 1, R, R) of clean images ``x_0`` in [-1, 1], averaged over x_t ~
    q(x_t | x_0) at each t of ``t_values``, ``draws`` draws per t > 0 (seeded: same bytes)."""
    if not t_values or draws < 1:
        raise DagError(f"need at least one t and one draw, got t={list(t_values)} draws={draws}")
    num_t = int(scheduler.config.num_train_timesteps)
    bad = [t for t in t_values if not 0 <= int(t) < num_t]
    if bad:
        raise DagError(f"label timestep(s) {bad} out of range 0..{num_t - 1}")
    generator = torch.Generator().manual_seed(seed)
    total: Tensor | None = None
    count = 0
    with torch.no_grad(), FeatureExtractor(unet, heads.blocks) as extractor:
        for t in t_values:
            t_batch = torch.full((x_0.shape[0],), int(t), dtype=torch.long, device=x_0.device)
            for _ in range(1 if int(t) == 0 else draws):
                x_t = x_0 if int(t) == 0 else noise_images(scheduler, x_0, t_batch, generator)
                d = heads.predict(extractor.features(x_t, t_batch), t_batch).strong.float()
                total = d if total is None else total + d
                count += 1
    assert total is not None
    return heads.norm.denormalize(total / count)
