"""Evaluate downstream depth networks: NYU metrics per image, means over training runs, and
paired comparisons between training sets on the same test images (with bootstrap CIs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dag_core.depthnet import DepthNet, load_depth_net, predict_depth
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.metrics.depth import DepthMetricAccumulator

#: metrics compared between training sets with CIs (lower-is-better AbsRel, higher-is-better δ1)
PAIRED_METRICS = ("abs_rel", "delta1")


def _as_pair(item: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, depth) from a tuple or an object with ``.rgb``/``.depth`` (DepthPair, Sample)."""
    if hasattr(item, "rgb") and hasattr(item, "depth"):
        return np.asarray(item.rgb), np.asarray(item.depth)
    rgb, depth = item
    return np.asarray(rgb), np.asarray(depth)


def evaluate(
    model: DepthNet,
    pairs: Iterable[Any],
    norm: DepthNorm,
    resolution: int,
    *,
    eigen_crop: bool = False,
    median_scaling: bool = False,
) -> dict[str, float]:
    """Mean NYU depth metrics of ``model`` over ``pairs`` plus ``count``: the means of
    :func:`evaluate_per_image` (same arguments)."""
    return evaluate_per_image(
        model, pairs, norm, resolution, eigen_crop=eigen_crop, median_scaling=median_scaling
    ).compute()


def evaluate_per_image(
    model: DepthNet,
    pairs: Iterable[Any],
    norm: DepthNorm,
    resolution: int,
    *,
    eigen_crop: bool = False,
    median_scaling: bool = False,
) -> DepthMetricAccumulator:
    """NYU depth metrics of ``model`` on each of ``pairs``, at full ground-truth resolution.

    ``pairs``: (rgb uint8 (H, W, 3), depth metres (H, W)) tuples or objects with ``.rgb`` and
    ``.depth`` (:class:`dag_core.nyu.DepthPair`). Predictions come from :func:`predict_depth`.
    ``eigen_crop=True`` applies the Eigen et al. crop (:data:`dag_core.metrics.depth.EIGEN_CROP`),
    which is defined for 480×640 NYU frames only: any other image size raises :class:`DagError`
    (use it for NYU test pairs, not for synthetic or resized images). With no pairs,
    ``.compute()`` and ``.per_image()`` raise.
    ``median_scaling`` rescales each prediction by median(gt) / median(pred). Returns the metric
    means plus ``count`` (images) via ``.compute()``, and every image's metrics via
    ``.per_image()`` (paired comparisons: :func:`paired_comparison`).
    """
    acc = DepthMetricAccumulator(eigen_crop=eigen_crop, median_scaling=median_scaling)
    for item in pairs:
        rgb, depth = _as_pair(item)
        if rgb.shape[:2] != depth.shape:
            raise DagError(f"rgb shape {rgb.shape[:2]} != depth shape {depth.shape}")
        acc.update(predict_depth(model, rgb, norm, resolution), depth.astype(np.float32))
    return acc


def mean_over_runs(means: list[dict[str, float]]) -> dict[str, float]:
    """One set's metrics over its training runs: the means (``count`` stays the image count),
    plus ``runs`` and, for several runs, the run-to-run SD of the paired metrics."""
    if len(means) == 1:
        return means[0]
    out = {k: float(np.mean([m[k] for m in means])) for k in means[0] if k != "count"}
    out["count"] = means[0]["count"]
    out["runs"] = len(means)
    for metric in PAIRED_METRICS:
        out[f"{metric}_run_sd"] = float(np.std([m[metric] for m in means], ddof=1))
    return out


def evaluate_training_sets(
    models: Mapping[str, str | Path | Sequence[str | Path]],
    splits: Mapping[str, tuple[Iterable[Any], Mapping[str, Any]]],
    *,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, Any]], int]:
    """Evaluate every saved net of every training set on every test split.

    ``models`` maps a training set to one net folder (:func:`save_depth_net` layout) or to R of
    them (R training runs, run r of every set with the same seed); ``splits`` maps a split name
    to (test pairs, keyword arguments of :func:`evaluate_per_image`). Returns ``(results,
    per_image, runs)``: ``results[split][set]`` are the metric means over the set's runs
    (:func:`mean_over_runs`), ``per_image[split][set]`` every test image's metrics, (N,) arrays
    for one run and (R, N) for R runs (:func:`paired_comparison`), and R.
    """
    runs = {
        name: [dirs] if isinstance(dirs, str | Path) else list(dirs)
        for name, dirs in models.items()
    }
    counts = {len(dirs) for dirs in runs.values()}
    if len(counts) != 1 or 0 in counts:
        raise DagError(f"every training set needs the same number (>= 1) of nets, got {runs}")
    n_runs = counts.pop()
    per_image: dict[str, dict[str, Any]] = {split: {} for split in splits}
    results: dict[str, dict[str, dict[str, float]]] = {split: {} for split in splits}
    for name, dirs in runs.items():
        run_means: dict[str, list[dict[str, float]]] = {split: [] for split in splits}
        run_rows: dict[str, list[dict[str, np.ndarray]]] = {split: [] for split in splits}
        for model_dir in dirs:
            model, cfg, norm = load_depth_net(model_dir)
            model.to(device)
            for split, (pairs, kw) in splits.items():
                acc = evaluate_per_image(model, pairs, norm, cfg.resolution, **kw)
                run_means[split].append(acc.compute())
                run_rows[split].append(acc.per_image())
        for split in splits:
            results[split][name] = mean_over_runs(run_means[split])
            rows = run_rows[split]
            per_image[split][name] = (
                rows[0] if n_runs == 1 else {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            )
        log(f"{name}: { ({split: results[split][name] for split in splits}) }")
    return results, per_image, n_runs


def paired_comparison(
    per_image: Mapping[str, Mapping[str, np.ndarray]],
    reference: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each training set's per-image metrics against ``reference``'s on the SAME test images:
    the mean difference (set − reference) with a bootstrap 95 % CI and a verdict (``lower`` /
    ``higher`` / ``no difference``, :func:`dag_core.metrics.effect.verdict`).

    Metric arrays are (N,) for one net per set, or (R, N) for R training runs per set (run r of
    every set shares its seed, so runs are paired too). With one run the CI covers only the
    choice of test images, and a difference can still be seed noise of that run; with R ≥ 2 it
    resamples runs and images (:func:`dag_core.metrics.effect.mean_bootstrap`).
    """
    from dag_core.metrics.effect import mean_bootstrap, verdict  # torch-fidelity on first use

    if reference not in per_image:
        raise DagError(
            f"paired reference {reference!r} is not a training set; have {', '.join(per_image)}"
        )
    out: dict[str, dict[str, Any]] = {}
    for name, values in per_image.items():
        if name == reference:
            continue
        row: dict[str, Any] = {}
        for metric in PAIRED_METRICS:
            diff = mean_bootstrap(
                values[metric], paired_with=per_image[reference][metric], n_boot=n_boot, seed=seed
            )
            row.update(diff.as_dict(f"{metric}_diff"))
            row[f"{metric}_verdict"] = verdict(diff)
        out[name] = row
    return out


def compare_sets(
    per_image: Mapping[str, Mapping[str, np.ndarray]],
    comparisons: Sequence[tuple[str, str]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Each (set, reference) pair's paired difference (set − reference) on the same test images.

    One row per comparison: ``{"set", "reference", "abs_rel_diff", "abs_rel_diff_ci_lo", …,
    "abs_rel_verdict", "delta1_diff", …}`` (95 % bootstrap CIs over the images, and over the
    training runs when there are several; :func:`paired_comparison`).
    """
    missing = sorted({n for pair in comparisons for n in pair} - set(per_image))
    if missing:
        raise DagError(
            f"comparison names unknown training set(s) {', '.join(missing)}; "
            f"have {', '.join(per_image)}"
        )
    rows = []
    for name, reference in comparisons:
        pair = {reference: per_image[reference], name: per_image[name]}
        row = paired_comparison(pair, reference, n_boot=n_boot, seed=seed)[name]
        rows.append({"set": name, "reference": reference, **row})
    return rows


def mean_with_ci(values: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """A set's mean per-image metric with its 95 % bootstrap CI (over images, and runs for
    (R, N) arrays): ``{"mean", "ci_lo", "ci_hi"}``."""
    from dag_core.metrics.effect import mean_bootstrap

    interval = mean_bootstrap(values, n_boot=n_boot, seed=seed)
    return {"mean": interval.value, "ci_lo": interval.lo, "ci_hi": interval.hi}
