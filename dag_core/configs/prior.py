"""Settings of the depth prior ε_φ (:class:`PriorConfig`), importable without torch.

The defaults are the embedded default's ``train_prior.config`` group of params.yaml (a test
compares them); :mod:`dag_core.prior` builds and trains the prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from dag_core.validation import Checked

PositiveInt = Annotated[int, Field(ge=1)]


@dataclass
class PriorConfig(Checked):
    """Architecture and optimisation of ε_φ (the defaults train in ~2-3 min on 2 CPU cores).

    Args:
        resolution: Size of the prior's depth maps (paper best: 128); a multiple of
            2^(levels − 1).
        channels: Channels per U-Net level (attention at the lowest level).
        layers_per_block: Resnet layers per U-Net block.
        num_train_timesteps: T of the prior's DDPM schedule.
        steps: Optimisation steps.
        batch_size: Depth maps per step.
        lr: AdamW learning rate.
        seed: Seed of the initial weights, noise and batches.
    """

    key = "PriorConfig"

    resolution: PositiveInt = 32
    channels: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (32, 64, 64)
    layers_per_block: PositiveInt = 1
    num_train_timesteps: PositiveInt = 1000
    steps: PositiveInt = 800
    batch_size: PositiveInt = 16
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2e-4
    seed: Annotated[int, Field(ge=0)] = 0

    def check(self) -> None:
        levels = 2 ** (len(self.channels) - 1)
        if self.resolution % levels:
            raise self._fail(
                "resolution",
                f"must be a multiple of {levels} for {len(self.channels)} channel levels",
            )
