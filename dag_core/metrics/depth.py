"""Monocular depth error metrics of Eigen et al. (NIPS 2014), as reported by the DAG paper.

The DAG paper (Kim et al., arXiv 2212.08861, Sec. 4–5) scores its depth predictors and the depth
networks trained on synthetic data with the standard NYU-Depth v2 metrics, all computed in metres
over the valid ground-truth pixels ``gt ∈ (min_depth, max_depth)`` of one image:

* ``abs_rel``  = mean |p − g| / g
* ``sq_rel``   = mean (p − g)² / g
* ``rmse``     = sqrt(mean (p − g)²)
* ``rmse_log`` = sqrt(mean (ln p − ln g)²)
* ``log10``    = mean |log10 p − log10 g|
* ``delta{k}`` = fraction of pixels with max(p / g, g / p) < 1.25^k, k = 1, 2, 3

Predictions are optionally median-scaled (p ← p · median(g) / median(p) over the valid pixels, for
scale-ambiguous predictors) and then clamped to ``[min_depth, max_depth]``. The Eigen crop
(:data:`EIGEN_CROP`) restricts evaluation to the region of a 480×640 NYU frame with valid Kinect
depth. Dataset scores are means of the per-image metrics (:class:`DepthMetricAccumulator`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dag_core.errors import DagError

EIGEN_CROP = (45, 471, 41, 601)  # rows 45:471, cols 41:601 of a 480×640 frame
EIGEN_SHAPE = (480, 640)
METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")


def _as_array(x: Any, name: str) -> np.ndarray:
    """A float64 numpy copy of a numpy array or a (possibly CUDA, grad-tracking) torch tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        raise DagError(f"{name} must be a depth map, got a scalar")
    return arr


def _single(arr: np.ndarray, name: str) -> np.ndarray:
    """(H, W) or (1, H, W) → (H, W)."""
    if arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    if arr.ndim != 2:
        raise DagError(f"{name} must be (H, W) or (1, H, W), got shape {arr.shape}")
    return arr


def _batch(arr: np.ndarray, name: str) -> np.ndarray:
    """(H, W), (B, H, W) or (B, 1, H, W) → (B, H, W)."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr
    if arr.ndim == 4 and arr.shape[1] == 1:
        return arr[:, 0]
    raise DagError(f"{name} must be (H, W), (B, H, W) or (B, 1, H, W), got shape {arr.shape}")


def _check_range(min_depth: float, max_depth: float) -> None:
    if not 0 < min_depth < max_depth:
        raise DagError(f"need 0 < min_depth < max_depth, got {min_depth} and {max_depth}")


def _metrics_2d(
    pred: np.ndarray,
    gt: np.ndarray,
    eigen_crop: bool,
    min_depth: float,
    max_depth: float,
    median_scaling: bool,
) -> dict[str, float]:
    if pred.shape != gt.shape:
        raise DagError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
    if eigen_crop:
        if gt.shape != EIGEN_SHAPE:
            raise DagError(f"eigen_crop needs 480x640 NYU images, got {gt.shape[0]}x{gt.shape[1]}")
        top, bottom, left, right = EIGEN_CROP
        crop = np.zeros_like(valid)
        crop[top:bottom, left:right] = True
        valid &= crop
    if not valid.any():
        raise DagError(
            f"no valid ground-truth pixel in ({min_depth}, {max_depth})"
            + (" inside the Eigen crop" if eigen_crop else "")
        )
    g, p = gt[valid], pred[valid]
    if not np.all(np.isfinite(p)):
        raise DagError("prediction has non-finite values at valid ground-truth pixels")
    if median_scaling:
        median_p = float(np.median(p))
        if median_p <= 0:
            raise DagError(f"cannot median-scale a prediction with median {median_p}")
        p = p * (np.median(g) / median_p)
    p = np.clip(p, min_depth, max_depth)
    ratio = np.maximum(p / g, g / p)
    sq = (p - g) ** 2
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean(sq / g)),
        "rmse": float(np.sqrt(np.mean(sq))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def depth_metrics(
    pred: Any,
    gt: Any,
    *,
    eigen_crop: bool = False,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    median_scaling: bool = False,
) -> dict[str, float]:
    """The :data:`METRIC_NAMES` metrics of one predicted depth map against its ground truth.

    ``pred`` and ``gt`` are metric depth maps (numpy or torch), (H, W) or (1, H, W), of the same
    shape. Valid pixels have ``gt`` strictly inside ``(min_depth, max_depth)`` (and inside
    :data:`EIGEN_CROP` when ``eigen_crop``, which needs a 480×640 frame). ``median_scaling``
    multiplies ``pred`` by median(gt) / median(pred) over the valid pixels; then ``pred`` is clamped
    to ``[min_depth, max_depth]``. Raises :class:`DagError` on mismatched shapes or no valid pixel.
    """
    _check_range(min_depth, max_depth)
    p = _single(_as_array(pred, "pred"), "pred")
    g = _single(_as_array(gt, "gt"), "gt")
    return _metrics_2d(p, g, eigen_crop, min_depth, max_depth, median_scaling)


class DepthMetricAccumulator:
    """Every image's :func:`depth_metrics` as passed to :meth:`update`: their means
    (:meth:`compute`) and the per-image values (:meth:`per_image`, for paired comparisons)."""

    def __init__(
        self,
        *,
        eigen_crop: bool = False,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        median_scaling: bool = False,
    ) -> None:
        _check_range(min_depth, max_depth)
        self.eigen_crop = eigen_crop
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.median_scaling = median_scaling
        self._rows: list[dict[str, float]] = []

    def update(self, pred: Any, gt: Any) -> None:
        """Add one image (H, W) / (1, H, W) or a batch (B, H, W) / (B, 1, H, W) of predictions."""
        p = _batch(_as_array(pred, "pred"), "pred")
        g = _batch(_as_array(gt, "gt"), "gt")
        if p.shape != g.shape:
            raise DagError(f"prediction shape {p.shape} != ground-truth shape {g.shape}")
        rows = [
            _metrics_2d(
                pi, gi, self.eigen_crop, self.min_depth, self.max_depth, self.median_scaling
            )
            for pi, gi in zip(p, g, strict=True)
        ]
        self._rows.extend(rows)

    @property
    def count(self) -> int:
        """Images added so far."""
        return len(self._rows)

    def per_image(self) -> dict[str, np.ndarray]:
        """Each metric per image, in the order added (for paired comparisons between models
        evaluated on the same images); DagError if none was added."""
        if not self._rows:
            raise DagError("no images were added to the depth metric accumulator")
        return {k: np.array([row[k] for row in self._rows]) for k in METRIC_NAMES}

    def compute(self) -> dict[str, float]:
        """Per-image metric means plus ``count`` (number of images); DagError if none was added."""
        result: dict[str, float] = {k: float(v.mean()) for k, v in self.per_image().items()}
        result["count"] = self.count
        return result
