"""Settings of the embedded tiny DDPM's training (:class:`TrainConfig`), without torch.

The defaults are the embedded default's ``base_model.train`` group of params.yaml (a test
compares them); :mod:`dag_core.backbone` trains the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from dag_core.validation import Checked

PositiveInt = Annotated[int, Field(ge=1)]


@dataclass
class TrainConfig(Checked):
    """The embedded tiny DDPM: church-256 block layout scaled down, ε-prediction, linear β.

    The defaults (32×32 world scenes, 1,400 steps) take about 9 minutes on 2 CPU cores.

    Args:
        resolution: Image size (a multiple of 32: the layout has six levels).
        channels: The six levels' channels (multiples of ``norm_num_groups``).
        norm_num_groups: GroupNorm groups.
        batch_size: Scenes per step.
        steps: Optimisation steps.
        lr: Peak AdamW learning rate (cosine schedule after ``warmup`` steps).
        warmup: Linear warm-up steps.
        ema_decay: Decay of the weights' exponential moving average (the saved weights).
        seed: Seed of the initial weights and the scenes.
        num_train_timesteps: T of the DDPM schedule.
        preview_samples: Samples drawn for ``samples.png`` after training (0: none).
        preview_steps: DDIM steps of the preview.
        weights_dtype: dtype of the saved weights: float16 halves the file (the shipped
            embedded model); loading always casts to float32, so the hash and every later stage
            see the same numbers.
        init_from: Warm start: a local diffusers folder with this exact layout whose weights
            training continues from (a fresh optimiser, LR schedule and EMA); None = random
            initialisation.
    """

    key = "TrainConfig"

    resolution: Annotated[int, Field(ge=32, multiple_of=32)] = 32
    channels: Annotated[tuple[PositiveInt, ...], Field(min_length=6, max_length=6)] = (
        32,
        32,
        64,
        64,
        128,
        128,
    )
    norm_num_groups: PositiveInt = 8
    batch_size: PositiveInt = 16
    steps: PositiveInt = 1400
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3
    warmup: Annotated[int, Field(ge=0)] = 50
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.995
    seed: Annotated[int, Field(ge=0)] = 0
    num_train_timesteps: PositiveInt = 1000
    preview_samples: Annotated[int, Field(ge=0)] = 16
    preview_steps: PositiveInt = 50
    weights_dtype: Literal["float32", "float16"] = "float32"
    init_from: str | None = None

    def check(self) -> None:
        if any(c % self.norm_num_groups for c in self.channels):
            raise self._fail(
                "channels", f"must be 6 multiples of norm_num_groups={self.norm_num_groups}"
            )
        if self.init_from is not None and not (Path(self.init_from) / "unet").is_dir():
            raise self._fail("init_from", "must be a local diffusers folder with a unet/")
