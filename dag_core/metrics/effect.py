"""Effects with uncertainty: bootstrap CIs for FID/dFID, paired differences, label consistency.

A guidance effect is only claimed when it is outside the noise (DAG paper §5 reports dFID/FID
without error bars; at the sample counts a CPU run affords, differences of a few FID points are
noise). Everything here resamples the GENERATED samples with replacement (the real set is fixed):

* :func:`fid_bootstrap` — FID of each resample against the real features, and for two variants
  that share seeds (sample i of each has the same initial noise) the PAIRED difference, using the
  same resampled indices for both. The point estimate and the resamples use the exact low-rank
  identity tr√(Σ_r^½ Σ_g Σ_r^½) = Σ√λ(X_c L Lᵀ X_cᵀ)/(n−1) with Σ_r = L Lᵀ and X_c the centred
  generated features (n ≪ 2048): torch-fidelity's FID to 1e-6 relative (:func:`fid_value` is
  that reference, and the tests compare the two), in milliseconds where torch-fidelity's
  eigenvalues of a 2048×2048 product take seconds on a CPU.
  FID is biased by the sample count, and a resample (with duplicates) has fewer distinct samples,
  so the bootstrap distribution sits above the point estimate; the interval reported is that
  distribution's 2.5–97.5 % spread placed around the point estimate
  [θ̂ − (q₅₀ − q₂.₅), θ̂ + (q₉₇.₅ − q₅₀)] — the sampling variability of FID at this n.
* :func:`fid_gap` — how far a set's FID is above the FLOOR: the FID that held-out real images
  reach at the same count (FID's bias at small n and the real set's own spread make that floor
  far from 0). gap / FID is the relative reduction that would make the set score like real
  images (a set can land below the floor only by noise, within its CI); the CI resamples both
  sets independently (they share nothing).
* :func:`mean_bootstrap` — mean and CI of per-sample values, or of paired per-sample differences
  (over samples, or over training runs × samples).
* :func:`consistency` — per-sample AbsRel and δ<1.25 between a sample's stored depth label (from
  MLP-S) and an independent reference estimator's depth on its image: does the label describe
  the image?
* :func:`verdict` — "lower" / "higher" when the CI of a difference excludes 0, else
  "no difference".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import (
    KEY_METRIC_KID_MEAN,
    KEY_METRIC_KID_STD,
    kid_features_to_metric,
)
from torch_fidelity.metric_prc import prc_features_to_metric

from dag_core.errors import DagError

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap percentile interval."""

    value: float
    lo: float
    hi: float

    def as_dict(self, name: str) -> dict[str, float]:
        return {name: self.value, f"{name}_ci_lo": self.lo, f"{name}_ci_hi": self.hi}


def verdict(diff: Interval) -> str:
    """``lower`` / ``higher`` if the interval of a difference excludes 0, else ``no difference``."""
    if diff.hi < 0:
        return "lower"
    if diff.lo > 0:
        return "higher"
    return "no difference"


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _spread_around(point: float, boots: np.ndarray, confidence: float) -> Interval:
    """The bootstrap distribution's percentile spread placed around the point estimate."""
    lo, hi = _percentiles(boots, confidence)
    mid = float(np.median(boots))
    return Interval(point, point - (mid - lo), point + (hi - mid))


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n < 2:
        raise DagError(f"bootstrap needs at least 2 samples, got {n}")
    if n_boot < 10:
        raise DagError(f"bootstrap needs at least 10 resamples, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


class RealFeatures:
    """Reference features: mean, covariance (torch-fidelity's statistics) and Σ_r's square root."""

    def __init__(self, features: np.ndarray) -> None:
        self.features = np.asarray(features, dtype=np.float64)
        if self.features.ndim != 2 or len(self.features) < 2:
            raise DagError(f"real features must be (N >= 2, D), got {self.features.shape}")
        self.stats = fid_features_to_statistics(torch.from_numpy(self.features))
        self.mu = self.stats["mu"].astype(np.float64)
        sigma = self.stats["sigma"].astype(np.float64)
        self.trace = float(np.trace(sigma))
        lam, vec = np.linalg.eigh(sigma)
        keep = lam > lam.max() * 1e-12
        self.root = vec[:, keep] * np.sqrt(lam[keep])  # Σ_r = root rootᵀ (low rank for N < D)


def fid_value(features: np.ndarray, real: RealFeatures) -> float:
    """torch-fidelity's FID of ``features`` against the real set: the reference that
    :func:`fast_fid` (the value every stage reports) equals to 1e-6 relative."""
    stats = fid_features_to_statistics(torch.from_numpy(np.asarray(features, dtype=np.float64)))
    return float(fid_statistics_to_metric(stats, real.stats, False)["frechet_inception_distance"])


class _Projected:
    """Generated features with what every resample needs precomputed (X Σ_r^½, ‖x_i‖²)."""

    def __init__(self, features: np.ndarray, real: RealFeatures) -> None:
        self.x = np.asarray(features, dtype=np.float64)
        self.y = self.x @ real.root
        self.sq = (self.x * self.x).sum(axis=1)
        self.real = real

    def fid(self, rows: np.ndarray | None = None) -> float:
        x, y, sq = (
            (self.x, self.y, self.sq)
            if rows is None
            else (self.x[rows], self.y[rows], self.sq[rows])
        )
        n = len(x)
        mu = x.mean(axis=0)
        yc = y - y.mean(axis=0)
        lam = np.linalg.eigvalsh(yc @ yc.T / (n - 1))
        tr_covmean = float(np.sqrt(np.clip(lam, 0, None)).sum())
        tr_sigma = (sq.sum() - n * float(mu @ mu)) / (n - 1)
        diff = mu - self.real.mu
        return float(diff @ diff + tr_sigma + self.real.trace - 2 * tr_covmean)


def fast_fid(features: np.ndarray, real: RealFeatures) -> float:
    """The same Fréchet distance through the low-rank identity (exact up to rounding)."""
    return _Projected(features, real).fid()


def fid_bootstrap(
    features: np.ndarray,
    real: RealFeatures,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    paired_with: np.ndarray | None = None,
) -> tuple[Interval, Interval | None]:
    """FID with a bootstrap CI over generated samples; with ``paired_with`` (features of the
    SAME seeds under another variant, row i ↔ row i) also the paired difference
    FID(features) − FID(paired_with) and its CI (same resampled rows for both)."""
    x = np.asarray(features, dtype=np.float64)
    idx = _resamples(len(x), n_boot, seed)
    projected = _Projected(x, real)
    boots = np.array([projected.fid(i) for i in idx])
    value = projected.fid()
    point = _spread_around(value, boots, confidence)
    if paired_with is None:
        return point, None
    ref = np.asarray(paired_with, dtype=np.float64)
    if ref.shape != x.shape:
        raise DagError(f"paired FID needs equal sample counts, got {x.shape} and {ref.shape}")
    ref_projected = _Projected(ref, real)
    diffs = boots - np.array([ref_projected.fid(i) for i in idx])
    return point, _spread_around(value - ref_projected.fid(), diffs, confidence)


def fid_gap(
    features: np.ndarray,
    floor: np.ndarray,
    real: RealFeatures,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[Interval, Interval]:
    """(gap, relative gap): FID(features) − FID(floor) and that gap / FID(features), each with a
    bootstrap CI from independent resamples of the two sets. ``floor`` = features of held-out
    real images, as many as ``features`` (FID's bias depends on the count)."""
    x = np.asarray(features, dtype=np.float64)
    f = np.asarray(floor, dtype=np.float64)
    if len(f) != len(x):
        raise DagError(f"FID floor needs as many real samples as generated, got {len(f)}, {len(x)}")
    gen_projected = _Projected(x, real)  # once, not per resample
    gen_boots = np.array([gen_projected.fid(i) for i in _resamples(len(x), n_boot, seed)])
    floor_projected = _Projected(f, real)
    floor_boots = np.array([floor_projected.fid(i) for i in _resamples(len(f), n_boot, seed + 1)])
    value, floor_value = gen_projected.fid(), floor_projected.fid()
    gap = _spread_around(value - floor_value, gen_boots - floor_boots, confidence)
    rel = _spread_around(
        (value - floor_value) / value, (gen_boots - floor_boots) / gen_boots, confidence
    )
    return gap, rel


def mean_bootstrap(
    values: np.ndarray,
    *,
    paired_with: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean of per-sample ``values`` (or of ``values − paired_with``) with a bootstrap CI.

    1-D values (N samples): the samples are resampled. 2-D values (R runs × N samples, e.g. R
    training seeds of a net scored on the same N test images): a crossed two-way bootstrap that
    resamples runs and samples independently (the mean of ``v[runs*][:, samples*]``), so the CI
    covers run-to-run noise as well as the choice of samples. With few runs that CI is still
    somewhat too narrow (a bootstrap over R runs has variance ∝ (R − 1)/R); one run (R = 1)
    gives the 1-D interval.
    """
    v = np.asarray(values, dtype=np.float64)
    if paired_with is not None:
        ref = np.asarray(paired_with, dtype=np.float64)
        if ref.shape != v.shape:
            raise DagError(f"paired values need equal shapes, got {v.shape} and {ref.shape}")
        v = v - ref
    if v.ndim == 2 and len(v) == 1:
        v = v[0]
    if v.ndim == 1:
        idx = _resamples(len(v), n_boot, seed)
        lo, hi = _percentiles(v[idx].mean(axis=1), confidence)
        return Interval(float(v.mean()), lo, hi)
    if v.ndim != 2 or len(v) < 2:
        raise DagError(f"bootstrap values must be (N,) or (runs, N), got shape {v.shape}")
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, v.shape[0], size=(n_boot, v.shape[0]))
    cols = _resamples(v.shape[1], n_boot, int(rng.integers(2**31)))
    boots = v[runs[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    lo, hi = _percentiles(boots, confidence)
    return Interval(float(v.mean()), lo, hi)


def kid_prc(features: np.ndarray, real: RealFeatures, *, seed: int = 0) -> dict[str, float]:
    """KID mean ± std over subsets and precision / recall (k = 3), by torch-fidelity's code."""
    gen = torch.from_numpy(np.asarray(features, dtype=np.float64))
    ref = torch.from_numpy(real.features)
    subset = min(len(gen), len(ref), 1000)
    kid = kid_features_to_metric(
        gen, ref, kid_subsets=100, kid_subset_size=subset, rng_seed=seed, verbose=False
    )
    prc = prc_features_to_metric(gen.float(), ref.float(), save_cpu_ram=True, verbose=False)
    return {
        "kid_mean": kid[KEY_METRIC_KID_MEAN],
        "kid_std": kid[KEY_METRIC_KID_STD],
        "precision": float(prc["precision"]),
        "recall": float(prc["recall"]),
    }


def consistency(labels: np.ndarray, estimates: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample AbsRel = mean |label − est| / est and δ<1.25 = share of max(l/e, e/l) < 1.25,
    between stored depth labels and reference-estimator depth (N, H, W), metres, same size."""
    lab = np.asarray(labels, dtype=np.float64)
    est = np.asarray(estimates, dtype=np.float64)
    if lab.shape != est.shape or lab.ndim != 3:
        raise DagError(f"labels and estimates must both be (N, H, W), got {lab.shape}, {est.shape}")
    if (
        not (np.isfinite(lab).all() and np.isfinite(est).all())
        or (lab <= 0).any()
        or (est <= 0).any()
    ):
        raise DagError("consistency needs finite positive depth maps")
    abs_rel = (np.abs(lab - est) / est).reshape(len(lab), -1).mean(axis=1)
    ratio = np.maximum(lab / est, est / lab)
    delta1 = (ratio < 1.25).reshape(len(lab), -1).mean(axis=1)
    return {"abs_rel": abs_rel, "delta1": delta1}
