"""Settings of the downstream depth networks, without torch: the training budget and rules
(:class:`DownstreamConfig`) and what one training set is (:class:`TrainingSet`).

The defaults are the embedded default's ``downstream.config`` group of params.yaml (a test
compares them); :mod:`dag_core.downstream` builds, trains and evaluates the networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from dag_core.validation import Checked

LOSSES = ("l1_log", "silog")
#: how a training set's pairs are used (:class:`TrainingSet`)
REGIMES = ("alone", "finetune", "mix")
#: where a training set's depth labels come from (:class:`TrainingSet`)
LABEL_SOURCES = ("stored", "heads", "reference")
PositiveInt = Annotated[int, Field(ge=1)]
#: the one-cycle schedule needs at least two warm-up steps and one annealing step
MIN_STEPS = 3


@dataclass
class DownstreamConfig(Checked):
    """Network, training budget and rules, identical for every training set being compared.

    The defaults train one network in about a minute on two CPU cores at 32².

    Args:
        resolution: Training and test crop size (a multiple of the network stride).
        channels: Channels per U-Net level.
        steps: Optimisation steps (the same budget for every training set; at least 3: the
            one-cycle learning-rate schedule warms up over the first 10 %, and over at least
            two steps, :attr:`warmup_fraction`).
        batch_size: Samples per step.
        lr: AdamW learning rate (peak of the one-cycle schedule).
        seed: Seed of the initial weights and the data stream.
        loss: ``l1_log`` (L1 in the normalised depth space) or ``silog``.
        finetune_fraction: ``finetune`` regime: the last fraction of the steps train on the
            labelled pairs, the rest on the set's own pairs.
        mix_fraction: ``mix`` regime: the share of every batch drawn from the labelled pairs.
        validate_every: With a validation set, the net is scored on it every this many steps
            (and at the last step) and the best-scoring weights are kept (checkpoint choice;
            never the test split).
    """

    key = "DownstreamConfig"

    resolution: PositiveInt = 32
    channels: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (32, 64, 128)
    steps: Annotated[int, Field(ge=MIN_STEPS)] = 800
    batch_size: PositiveInt = 16
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2e-3
    seed: int = 0
    loss: Literal["l1_log", "silog"] = "l1_log"
    finetune_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.25
    mix_fraction: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.5
    validate_every: PositiveInt = 50

    def check(self) -> None:
        stride = 2 ** (len(self.channels) - 1)
        if self.resolution % stride:
            raise self._fail(
                "resolution",
                f"is not a multiple of the network stride {stride} ({len(self.channels)} levels)",
            )

    @property
    def warmup_fraction(self) -> float:
        """The one-cycle schedule's ``pct_start``: 10 %, and at least two steps (a one-step
        warm-up divides by zero in torch's OneCycleLR, e.g. at 10 steps)."""
        return max(0.1, 2.0 / self.steps)

    @property
    def finetune_steps(self) -> int:
        """Steps on the labelled pairs at the end of a ``finetune`` run (at least one)."""
        return max(1, min(self.steps - 1, round(self.finetune_fraction * self.steps)))

    @property
    def mix_count(self) -> int:
        """Labelled samples in each batch of a ``mix`` run (at least one of each kind)."""
        return max(1, min(self.batch_size - 1, round(self.mix_fraction * self.batch_size)))


@dataclass
class TrainingSet(Checked):
    """One downstream training set: which pairs a depth net learns from, and how.

    Args:
        data: Shard dataset of image–depth pairs (synthetic, labelled or real).
        regime: ``alone`` — train on ``data`` only (the paper's comparison); ``finetune`` —
            pretrain on ``data``, then the last ``finetune_fraction`` of the steps on the
            labelled pairs; ``mix`` — every batch holds ``mix_fraction`` labelled pairs and the
            rest from ``data``. The labelled pairs are the stage's ``labelled`` dataset.
        labels: ``stored`` — the depth in ``data``; ``heads`` — re-labelled by the depth heads
            (MLP-S at t = 0, as synthesis labels its samples); ``reference`` — re-labelled by
            the reference depth estimator. The last two separate label noise from the image
            domain (the stage's diagnostic sets).
        limit: Use only the first ``limit`` rows of ``data`` (null = all); N for comparisons
            at equal size.
        drop_uncertain: Drop this fraction of ``data``'s rows with the highest label
            uncertainty (read time; rows without one are kept). A schema version 1 dataset
            (written before the ``uncertainty`` column) has no scores: every row is kept, and
            the stage says so in one log line (``downstream.train_sets.<name>.drop_uncertain=f:
            <data> has no uncertainty scores (schema 1); every row kept``).
    """

    key = "train_set"

    data: Annotated[str, Field(min_length=1)]
    regime: Literal["alone", "finetune", "mix"] = "alone"
    labels: Literal["stored", "heads", "reference"] = "stored"
    limit: PositiveInt | None = None
    drop_uncertain: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0

    @property
    def needs_labelled(self) -> bool:
        """Whether the regime also reads the labelled pairs."""
        return self.regime != "alone"
