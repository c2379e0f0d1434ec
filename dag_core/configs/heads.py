"""Settings of the depth heads MLP-S / MLP-W (:class:`HeadConfig`), importable without torch.

The defaults are the embedded default's ``train_heads.config`` group of params.yaml (a test
compares them); :mod:`dag_core.heads` builds and trains the heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from dag_core.validation import Checked

#: a decoder layer index (:mod:`dag_core.features`)
Layer = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


@dataclass
class HeadConfig(Checked):
    """Architecture and training hyper-parameters of the two depth heads.

    Args:
        strong_blocks: Decoder layers S read by MLP-S (paper: {2, 4, 5, 6, 7}).
        weak_blocks: Decoder layers W read by MLP-W (paper: {6}).
        hidden: Widths of the pixel-wise MLP's hidden layers.
        time_dim: Size of the timestep embedding (even).
        steps: Optimisation steps.
        batch_size: Images per step.
        pixels_per_image: Valid pixels regressed per image and step, drawn at random (bounds
            memory: bedroom-256 draws 8192 of 65536); None: every pixel of the depth map, once
            (maps of a few thousand pixels, where random draws would repeat pixels).
        lr: Adam learning rate.
        t_max: t is drawn uniformly from [0, t_max) (None: [0, T)); guidance should stay in
            the window the heads were trained on.
        seed: Seed of the initial weights and the batches.
        ensemble: K, the number of MLP-S members (default 1: the paper's single strong head).
            K > 1 trains K strong heads jointly on the same frozen U-Net forward per batch, each
            initialised from its own seed; d^S is their mean (what guidance and the labels use)
            and their spread is the labels' uncertainty (ddpm-segmentation's pixel-MLP
            ensemble, Baranchuk et al., ICLR 2022). The weak head stays one.
    """

    key = "HeadConfig"

    strong_blocks: Annotated[tuple[Layer, ...], Field(min_length=1)] = (2, 4, 5, 6, 7)
    weak_blocks: Annotated[tuple[Layer, ...], Field(min_length=1)] = (6,)
    hidden: tuple[PositiveInt, ...] = (128, 64)
    time_dim: Annotated[int, Field(ge=2, multiple_of=2)] = 64
    steps: PositiveInt = 2000
    batch_size: PositiveInt = 6
    pixels_per_image: PositiveInt | None = None
    lr: PositiveFloat = 1e-3
    t_max: PositiveInt | None = 600
    seed: Annotated[int, Field(ge=0)] = 0
    ensemble: PositiveInt = 1

    def record(self) -> dict[str, Any]:
        """The config as written into a heads folder (``heads.json``): :meth:`to_dict` without
        ``ensemble`` while it is 1, so single-head folders stay byte-identical to those written
        before ensembles existed (and code from before reads them)."""
        data = self.to_dict()
        if self.ensemble == 1:
            del data["ensemble"]
        return data
