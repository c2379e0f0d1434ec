"""Depth normalisation shared by the heads, the depth prior and the metrics.

The heads regress, and the depth prior ε_φ (paper, "Depth prior guidance") denoises, depth in a
fixed normalised space x ∈ [-1, 1]; metres only appear at the edges (labels in, predictions out).
The mapping is stored with every checkpoint so heads, prior and evaluation can never disagree.

* ``log``    — x = 2 · (log d − log d_min) / (log d_max − log d_min) − 1  (default; equal relative
  error everywhere in the range, the scale-invariant view of NYU metrics)
* ``linear`` — x = 2 · (d − d_min) / (d_max − d_min) − 1
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from dag_core.errors import DagError

NORM_KINDS = ("log", "linear")


@dataclass(frozen=True)
class DepthNorm:
    """Invertible map between metric depth (metres) and x ∈ [-1, 1]; depth clamped to the range."""

    kind: str = "log"
    min_depth: float = 0.25
    max_depth: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in NORM_KINDS:
            raise DagError(f"unknown depth normalisation '{self.kind}'; expected log or linear")
        if not 0 < self.min_depth < self.max_depth:
            raise DagError(
                f"depth range must satisfy 0 < min_depth < max_depth, "
                f"got {self.min_depth}..{self.max_depth}"
            )

    def _bounds(self) -> tuple[float, float]:
        if self.kind == "log":
            return math.log(self.min_depth), math.log(self.max_depth)
        return self.min_depth, self.max_depth

    def normalize(self, depth: torch.Tensor) -> torch.Tensor:
        """Metres → [-1, 1] (values outside [min_depth, max_depth] are clamped first)."""
        lo, hi = self._bounds()
        d = depth.clamp(self.min_depth, self.max_depth)
        if self.kind == "log":
            d = d.log()
        return (d - lo) / (hi - lo) * 2.0 - 1.0

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → metres (differentiable; inputs outside [-1, 1] are clamped)."""
        lo, hi = self._bounds()
        v = (x.clamp(-1.0, 1.0) + 1.0) / 2.0 * (hi - lo) + lo
        return v.exp() if self.kind == "log" else v

    @staticmethod
    def valid(depth: torch.Tensor) -> torch.Tensor:
        """Mask of pixels with a measured depth (finite and > 0; NYU stores holes as 0)."""
        return torch.isfinite(depth) & (depth > 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DepthNorm:
        unknown = set(data) - {"kind", "min_depth", "max_depth"}
        if unknown:
            raise DagError(f"unknown depth normalisation field(s): {', '.join(sorted(unknown))}")
        return cls(**data)
