"""Eigen et al. depth metrics against hand-computed values on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dag_core.errors import DagError
from dag_core.metrics import EIGEN_CROP, METRIC_NAMES, DepthMetricAccumulator, depth_metrics

# 2×3 ground truth with two invalid pixels: 0 (no reading) and 12 m (beyond max_depth = 10).
GT = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 12.0]])
# Valid (pred, gt) pairs: (1.1, 1), (3, 2), (3.8, 2), (3, 1) → ratios 1.1, 1.5, 1.9, 3.
# The predictions 7 and 5 at the invalid pixels must not count.
PRED = np.array([[1.1, 3.0, 7.0], [3.8, 3.0, 5.0]])


def hand_computed() -> dict[str, float]:
    """The arithmetic, written out for the four valid pixels of GT / PRED."""
    return {
        # |p - g| / g = 0.1/1, 1/2, 1.8/2, 2/1
        "abs_rel": (0.1 + 0.5 + 0.9 + 2.0) / 4,  # 0.875
        # (p - g)² / g = 0.01/1, 1/2, 3.24/2, 4/1
        "sq_rel": (0.01 + 0.5 + 1.62 + 4.0) / 4,  # 1.5325
        # (p - g)² = 0.01, 1, 3.24, 4
        "rmse": math.sqrt((0.01 + 1.0 + 3.24 + 4.0) / 4),  # sqrt(2.0625)
        # ln p - ln g = ln 1.1, ln 1.5, ln 1.9, ln 3
        "rmse_log": math.sqrt(sum(math.log(r) ** 2 for r in (1.1, 1.5, 1.9, 3.0)) / 4),
        # sum of log10 ratios = log10(1.1 · 1.5 · 1.9 · 3) = log10(9.405)
        "log10": math.log10(1.1 * 1.5 * 1.9 * 3.0) / 4,
        # max(p/g, g/p) < 1.25 (1.1) | < 1.5625 (1.1, 1.5) | < 1.953125 (1.1, 1.5, 1.9)
        "delta1": 1 / 4,
        "delta2": 2 / 4,
        "delta3": 3 / 4,
    }


def test_metrics_match_hand_computation():
    got = depth_metrics(PRED, GT, max_depth=10.0)
    assert tuple(got) == METRIC_NAMES
    want = hand_computed()
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], rel=1e-12, abs=1e-15), name


def test_torch_and_channel_dim_inputs_agree():
    want = depth_metrics(PRED, GT)
    got = depth_metrics(torch.tensor(PRED[None], dtype=torch.float64), torch.tensor(GT[None]))
    assert got == pytest.approx(want, rel=1e-12)


def test_valid_range_is_open_interval():
    # min_depth = 1 excludes the two gt = 1 pixels: left (3, 2), (3.8, 2)
    got = depth_metrics(PRED, GT, min_depth=1.0)
    assert got["abs_rel"] == pytest.approx((0.5 + 0.9) / 2)
    # max_depth = 2 excludes every gt = 2 pixel: left (1.1, 1), (3→clamped to 2, 1)
    got = depth_metrics(PRED, GT, max_depth=2.0)
    assert got["abs_rel"] == pytest.approx((0.1 + 1.0) / 2)


def test_prediction_is_clamped_to_range():
    gt = np.array([[2.0, 2.0]])
    pred = np.array([[0.0, 20.0]])  # clamped to 0.5 and 10
    got = depth_metrics(pred, gt, min_depth=0.5, max_depth=10.0)
    assert got["abs_rel"] == pytest.approx((1.5 / 2 + 8.0 / 2) / 2)  # 2.375
    assert got["rmse"] == pytest.approx(math.sqrt((1.5**2 + 8.0**2) / 2))
    assert got["delta3"] == 0.0


def test_eigen_crop_boundaries():
    top, bottom, left, right = EIGEN_CROP
    assert EIGEN_CROP == (45, 471, 41, 601)
    gt = np.ones((480, 640))
    pred = np.ones((480, 640))
    # wrong just outside the crop: row 44, row 471, column 40, column 601
    pred[top - 1, :] = pred[bottom, :] = pred[:, left - 1] = pred[:, right] = 5.0
    pred[top, left] = 2.0  # wrong at the crop's first pixel: |2 - 1| / 1 = 1
    n_crop = (bottom - top) * (right - left)  # 426 · 560
    got = depth_metrics(pred, gt, eigen_crop=True)
    assert got["abs_rel"] == pytest.approx(1.0 / n_crop, rel=1e-12)
    assert got["delta1"] == pytest.approx(1.0 - 1.0 / n_crop, rel=1e-12)
    uncropped = depth_metrics(pred, gt)
    assert uncropped["abs_rel"] > 100 * got["abs_rel"]


def test_median_scaling_hand_computed_over_valid_pixels_only():
    gt = np.array([[1.0, 2.0, 4.0, 0.0]])
    pred = np.array([[2.0, 4.0, 8.0, 1000.0]])  # 2 · gt, plus garbage at the invalid pixel
    # valid medians: gt 2, pred 4 → pred · 0.5 = gt exactly (all pixels: 1.5, 6 → 0.25 · pred)
    got = depth_metrics(pred, gt, median_scaling=True)
    assert got["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert got["delta1"] == 1.0
    assert depth_metrics(pred, gt)["abs_rel"] == pytest.approx(1.0)  # unscaled: |2g - g| / g


def test_median_scaling_is_scale_invariant():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 8.0, size=(24, 32))
    gt[rng.random(gt.shape) < 0.2] = 0.0
    pred = gt * rng.uniform(0.7, 1.4, size=gt.shape)
    base = depth_metrics(pred, gt, median_scaling=True)
    for k in (0.05, 3.7, 40.0):
        scaled = depth_metrics(pred * k, gt, median_scaling=True)
        assert scaled == pytest.approx(base, rel=1e-9), k
    assert depth_metrics(pred * 3.7, gt)["abs_rel"] > base["abs_rel"] + 1.0


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "needle"),
    [
        (np.ones((2, 3)), np.ones((3, 2)), {}, "shape"),
        (np.ones((2, 3)), np.zeros((2, 3)), {}, "no valid"),
        (np.ones((2, 3)), np.full((2, 3), 11.0), {}, "no valid"),
        (np.ones((240, 320)), np.ones((240, 320)), {"eigen_crop": True}, "480x640"),
        (np.ones((2, 2, 3)), np.ones((2, 2, 3)), {}, "(H, W)"),
        (np.ones((2, 3)), np.ones((2, 3)), {"min_depth": 5.0, "max_depth": 1.0}, "min_depth"),
    ],
)
def test_bad_inputs(pred, gt, kwargs, needle):
    with pytest.raises(DagError) as exc:
        depth_metrics(pred, gt, **kwargs)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_accumulator_is_mean_over_images():
    # image A: one valid pixel, abs_rel 1; image B: three valid pixels, abs_rel 0
    gt = np.array([[[1.0, 0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0, 0.0]]])
    pred = np.array([[[2.0, 9.0, 9.0, 9.0]], [[1.0, 2.0, 3.0, 9.0]]])
    acc = DepthMetricAccumulator()
    acc.update(torch.tensor(pred[:, None]), torch.tensor(gt[:, None]))  # (B, 1, H, W)
    got = acc.compute()
    assert got["count"] == 2
    assert got["abs_rel"] == pytest.approx((1.0 + 0.0) / 2)  # per image, not pooled (1/4)
    assert got["delta1"] == pytest.approx((0.0 + 1.0) / 2)


def test_accumulator_mixed_updates_equal_per_image_mean():
    rng = np.random.default_rng(1)
    gts = rng.uniform(0.5, 9.0, size=(5, 6, 7))
    preds = gts * rng.uniform(0.5, 2.0, size=gts.shape)
    kw = {"min_depth": 0.4, "max_depth": 10.0, "median_scaling": True}
    acc = DepthMetricAccumulator(**kw)
    acc.update(preds[:3], gts[:3])  # (B, H, W) batch
    acc.update(preds[3], gts[3])  # single (H, W)
    acc.update(torch.tensor(preds[4:]), torch.tensor(gts[4:]))  # (1, H, W)
    got = acc.compute()
    rows = [depth_metrics(p, g, **kw) for p, g in zip(preds, gts, strict=True)]
    assert got["count"] == 5
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(np.mean([r[name] for r in rows]), rel=1e-12)


def test_accumulator_errors():
    acc = DepthMetricAccumulator()
    with pytest.raises(DagError, match="no images"):
        acc.compute()
    with pytest.raises(DagError, match="shape"):
        acc.update(np.ones((2, 4, 4)), np.ones((3, 4, 4)))
    with pytest.raises(DagError, match="480x640"):
        DepthMetricAccumulator(eigen_crop=True).update(np.ones((1, 8, 8)), np.ones((1, 8, 8)))
