"""The downstream depth network's budget: one :class:`DownstreamConfig` for every training set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from dag_core.errors import DagError

LOSSES = ("l1_log", "silog")


@dataclass
class DownstreamConfig:
    """Network and training budget, identical for every training set being compared.

    Defaults train one network in about a minute on two CPU cores at 32², so the three training
    sets of the paper's comparison (labelled, unguided, DAG) fit in a few minutes.
    """

    resolution: int = 32
    channels: tuple[int, ...] = (32, 64, 128)
    steps: int = 800
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0
    loss: str = "l1_log"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or any(c < 1 for c in self.channels):
            raise DagError(f"channels must be one or more positive widths, got {self.channels}")
        for name in ("resolution", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise DagError(f"{name} must be >= 1, got {getattr(self, name)}")
        stride = 2 ** (len(self.channels) - 1)
        if self.resolution % stride:
            raise DagError(
                f"resolution {self.resolution} is not a multiple of the network stride {stride} "
                f"({len(self.channels)} levels)"
            )
        if not self.lr > 0:
            raise DagError(f"lr must be > 0, got {self.lr}")
        if self.loss not in LOSSES:
            raise DagError(f"unknown loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise DagError(f"seed must be an int, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DownstreamConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise DagError(f"unknown downstream config field(s): {', '.join(sorted(unknown))}")
        return cls(**data)
