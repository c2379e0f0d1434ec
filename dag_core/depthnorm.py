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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from dag_core.validation import Checked

if TYPE_CHECKING:  # tensors come in as arguments; this module itself imports no torch
    import torch

NORM_KINDS = ("log", "linear")
Depth = Annotated[float, Field(gt=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class DepthNorm(Checked):
    """Invertible map between metric depth (metres) and x ∈ [-1, 1]; depth clamped to the range.

    The defaults are the ``depth_norm`` group of params.yaml (a test compares them).

    Args:
        kind: ``log`` (equal relative error everywhere in the range) or ``linear``.
        min_depth: Depth (metres) mapped to -1; smaller depths are clamped.
        max_depth: Depth (metres) mapped to 1; larger depths are clamped.
    """

    key = "depth_norm"

    kind: Literal["log", "linear"] = "log"
    min_depth: Depth = 0.25
    max_depth: Depth = 10.0

    def check(self) -> None:
        if not self.min_depth < self.max_depth:
            raise self._fail(
                "min_depth", f"depth range must satisfy 0 < min_depth < max_depth={self.max_depth}"
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
        return depth.isfinite() & (depth > 0)
