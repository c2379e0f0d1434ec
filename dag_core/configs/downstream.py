"""Settings of the downstream depth networks (:class:`DownstreamConfig`), without torch.

The defaults are the embedded default's ``downstream.config`` group of params.yaml (a test
compares them); :mod:`dag_core.downstream` builds, trains and evaluates the networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from dag_core.validation import Checked

LOSSES = ("l1_log", "silog")
PositiveInt = Annotated[int, Field(ge=1)]


@dataclass
class DownstreamConfig(Checked):
    """Network and training budget, identical for every training set being compared.

    The defaults train one network in about a minute on two CPU cores at 32², so the three
    training sets of the paper's comparison (labelled, unguided, DAG) fit in a few minutes.

    Args:
        resolution: Training and test crop size (a multiple of the network stride).
        channels: Channels per U-Net level.
        steps: Optimisation steps (the same budget for every training set).
        batch_size: Samples per step.
        lr: AdamW learning rate.
        seed: Seed of the initial weights and the data stream.
        loss: ``l1_log`` (L1 in the normalised depth space) or ``silog``.
    """

    key = "DownstreamConfig"

    resolution: PositiveInt = 32
    channels: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (32, 64, 128)
    steps: PositiveInt = 800
    batch_size: PositiveInt = 16
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2e-3
    seed: int = 0
    loss: Literal["l1_log", "silog"] = "l1_log"

    def check(self) -> None:
        stride = 2 ** (len(self.channels) - 1)
        if self.resolution % stride:
            raise self._fail(
                "resolution",
                f"is not a multiple of the network stride {stride} ({len(self.channels)} levels)",
            )
