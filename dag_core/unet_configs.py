"""Real diffusers U-Net configurations, and tiny random U-Nets with the same block layout.

Nothing can be downloaded at test time, so tests build randomly initialised ``UNet2DModel`` s whose
block types and counts are those of ``google/ddpm-church-256`` (identical to
``google/ddpm-bedroom-256``, the paper's bedroom model), scaled down in channels and resolution.
Feature numbering (:mod:`dag_core.features`) is therefore exercised on the real layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import UNet2DModel

#: ``unet/config.json`` of google/ddpm-church-256 (and google/ddpm-bedroom-256).
CHURCH_256_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "center_input_sample": False,
    "down_block_types": [
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "AttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "time_embedding_type": "positional",
    "up_block_types": [
        "UpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
        "UpBlock2D",
    ],
}

#: ``scheduler/scheduler_config.json`` of google/ddpm-church-256 (DDPM, linear β, T = 1000).
CHURCH_256_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "variance_type": "fixed_small",
}

TINY_CHANNELS: tuple[int, ...] = (16, 16, 32, 32, 64, 64)


def church_like_config(
    resolution: int = 32,
    channels: Sequence[int] = TINY_CHANNELS,
    in_channels: int = 3,
    out_channels: int | None = None,
    norm_num_groups: int = 8,
) -> dict[str, Any]:
    """The church-256 layout (6 levels, 2 layers each, attention at 16²-equivalent) resized."""
    if len(channels) != len(CHURCH_256_CONFIG["block_out_channels"]):
        raise ValueError(f"church layout needs 6 channel counts, got {list(channels)}")
    config = dict(CHURCH_256_CONFIG)
    config.update(
        block_out_channels=list(channels),
        sample_size=resolution,
        in_channels=in_channels,
        out_channels=out_channels if out_channels is not None else in_channels,
        norm_num_groups=norm_num_groups,
    )
    return config


def tiny_unet(resolution: int = 32, seed: int = 0, **kwargs: Any) -> UNet2DModel:
    """A randomly initialised church-layout ``UNet2DModel`` (deterministic in ``seed``)."""
    torch.manual_seed(seed)
    return UNet2DModel(**church_like_config(resolution, **kwargs))
