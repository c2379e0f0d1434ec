"""Tasks for the evaluation stages: reference sets, dFID / FID, downstream depth training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dag_core.atomic import replace_dir
from dag_core.depthnorm import DepthNorm
from dag_core.downstream import (
    PAIRED_METRICS,
    DownstreamConfig,
    evaluate_per_image,
    load_depth_net,
    markdown_table,
    paired_comparison,
    save_depth_net,
    train_depth_net,
)
from dag_core.errors import DagError
from dag_core.metrics.effect import CONFIDENCE
from dag_core.metrics.fid import resolve_extractor
from dag_core.metrics.scorer import GeneratedSet, Scorer
from dag_core.nyu import open_nyu
from dag_core.runtime import use_runtime
from dag_core.shards import Sample, read_samples, write_dataset
from dag_core.world import iter_scenes
from tasks import config_from_params, run_logger, stage_task

REFERENCE_SEED_BASE = 100_000_000  # disjoint from label-subset and prior scenes


def downstream_config(config: dict[str, Any]) -> DownstreamConfig:
    return config_from_params(DownstreamConfig, config, "depth-network")


@stage_task
def write_world_reference(
    out_dir: str, resolution: int, n_train: int, n_test: int, n_floor: int = 0
) -> str:
    """World pairs the labelled subset never sees: ``train`` for the reference depth estimator,
    ``test`` as the real image set for FID and the held-out procedural test split, and (n_floor
    > 0) ``floor``: more held-out pairs that give the FID / dFID a real set reaches at the
    generated sets' count (the dfid stage's floor)."""
    with replace_dir(out_dir) as tmp:
        splits = [
            ("train", REFERENCE_SEED_BASE, n_train),
            ("test", REFERENCE_SEED_BASE + n_train, n_test),
        ]
        if n_floor:
            splits.append(("floor", REFERENCE_SEED_BASE + n_train + n_test, n_floor))
        for name, start, count in splits:
            samples = (
                Sample(id=f"world-{s:09d}", rgb=rgb, depth=d, seed=s, source="world")
                for s, rgb, d in iter_scenes(start, count, resolution)
            )
            write_dataset(tmp / name, samples, shard_size=1000, depth_dtype="float16")
    run_logger().info("world reference sets: %d train, %d test, %d floor", n_train, n_test, n_floor)
    return out_dir


@stage_task
def fit_depth_net(
    train_dirs: list[str],
    out_dir: str,
    config: dict[str, Any],
    norm: dict[str, Any],
    runtime: dict[str, Any] | None = None,
) -> str:
    """Train a monocular depth U-Net on shard datasets (on the runtime device) and save it
    (safetensors + json)."""
    logger = run_logger()
    cfg = downstream_config(config)
    depth_norm = DepthNorm.from_dict(norm)
    rt, device = use_runtime(runtime)
    with rt.autocast(device):
        model, _ = train_depth_net(train_dirs, cfg, depth_norm, log=logger.info, device=device)
    with replace_dir(out_dir) as tmp:
        save_depth_net(model, cfg, depth_norm, tmp)
    return out_dir


def _images(directory: str | Path, limit: int | None) -> np.ndarray:
    """The first ``limit`` (default: all) images of a shard dataset, uint8 (N, H, W, 3)."""
    return _images_and_labels(directory, limit, labels=False)[0]


def _images_and_labels(
    directory: str | Path, limit: int | None, labels: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Images uint8 (N, H, W, 3) and (``labels``) their depth in metres (N, h, w)."""
    rgb, depth = [], []
    columns = ["rgb", "depth"] if labels else ["rgb"]
    for s in read_samples(directory, columns=columns):
        rgb.append(s.rgb)
        if labels:
            depth.append(s.depth)
        if limit is not None and len(rgb) == limit:
            break
    if not rgb:
        raise DagError(f"no images in {directory}")
    return np.stack(rgb), (np.stack(depth) if labels else None)


def scorer(
    real: str,
    estimator: str,
    extractor: str,
    batch_size: int,
    n_boot: int,
    device: torch.device | str | None = None,
) -> Scorer:
    """The reference set's features and the dFID depth estimator, computed/loaded once."""
    return Scorer(
        _images(real, None),
        estimator,
        extractor=resolve_extractor(extractor),
        batch_size=batch_size,
        n_boot=n_boot,
        device=device,
    )


def read_floor(floor: str, n: int, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` held-out real pairs of ``floor`` (images, depth labels); a one-line
    DagError when it holds fewer (FID's bias depends on the count, so the floor needs as many)."""
    rgb, depth = _images_and_labels(floor, n)
    if len(rgb) < n:
        raise DagError(f"{stage} floor {floor} has {len(rgb)} images, fewer than the {n} generated")
    assert depth is not None
    return rgb, depth


@stage_task
def compute_dfid(
    synthetic: str,
    variants: list[str],
    real: str,
    estimator: str,
    extractor: str,
    batch_size: int,
    max_samples: int | None,
    n_boot: int,
    reference_variant: str | None,
    metrics_file: str,
    runtime: dict[str, Any] | None = None,
    floor: str | None = None,
) -> str:
    """dFID (paper §5: FID between depth maps estimated by one reference estimator from generated
    and from real images), FID, KID, precision/recall and image–label consistency per variant,
    each with a bootstrap 95 % CI; and each variant's paired difference to ``reference_variant``
    (same seeds) with its CI and a verdict ("no difference" when the CI contains 0).

    ``floor``: held-out real image–depth pairs (not in ``real``). Their first n, scored like a
    variant of n samples, give the floor (``floor``: what real images reach at this count) and
    each variant's gap above it with CIs (``headroom``): the reduction that would make the
    variant score like real images."""
    logger = run_logger()
    _, device = use_runtime(runtime)
    images = {v: _images_and_labels(Path(synthetic) / v, max_samples) for v in variants}
    n_max = max(len(rgb) for rgb, _ in images.values())
    floor_pairs = read_floor(floor, n_max, "dfid") if floor else None
    score = scorer(real, estimator, extractor, batch_size, n_boot, device)
    sets = {v: score.features(*pairs) for v, pairs in images.items()}
    ref = sets.get(reference_variant) if reference_variant else None
    results: dict[str, Any] = {
        "extractor": resolve_extractor(extractor),
        "n_real": score.n_real,
        "n_boot": n_boot,
        "confidence": CONFIDENCE,
        "reference_variant": reference_variant if ref is not None else None,
        "variants": {},
        f"vs_{reference_variant}": {},
    }
    for variant, gen in sets.items():
        against = ref if ref is not None and variant != reference_variant else None
        row, diff = score.summary(gen, against)
        results["variants"][variant] = row
        if diff is not None:
            results[f"vs_{reference_variant}"][variant] = diff
        logger.info("%s: %s %s", variant, row, diff or "")
    if not results[f"vs_{reference_variant}"]:
        del results[f"vs_{reference_variant}"]
    if floor_pairs is not None:
        floor_sets: dict[int, GeneratedSet] = {}
        results["headroom"] = {}
        for variant, gen in sets.items():
            if gen.n not in floor_sets:
                rgb, depth = floor_pairs
                floor_sets[gen.n] = score.features(rgb[: gen.n], depth[: gen.n])
            results["headroom"][variant] = score.gap(gen, floor_sets[gen.n])
        floor_n = (ref or next(iter(sets.values()))).n
        row, _ = score.summary(floor_sets[floor_n])
        results["floor"] = {"data": floor, **row}
        logger.info(
            "floor (held-out real, n=%d): %s; headroom %s", floor_n, row, results["headroom"]
        )
    Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_file).write_text(json.dumps(results, indent=2) + "\n")
    return metrics_file


def _world_test_pairs(directory: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(s.rgb, s.depth) for s in read_samples(directory, columns=["rgb", "depth"])]


@stage_task
def evaluate_depth_nets(
    models: dict[str, str] | dict[str, list[str]],
    world_test: str,
    nyu_path: str | None,
    nyu_median_scaling: bool,
    metrics_file: str,
    table_file: str,
    runtime: dict[str, Any] | None = None,
    reference: str | None = "unguided",
    n_boot: int = 1000,
) -> str:
    """Evaluate each trained depth net on the procedural test split and, if given, NYU-Depth v2;
    with ``reference`` (a training-set name) add each other set's paired difference against it
    on the same test images, with bootstrap CIs (``paired``).

    ``models`` maps a training set to one net directory or to R of them (R training runs, run r
    of every set with the same seed): a set's metrics are then the means over its runs, with
    ``runs`` and the run-to-run standard deviation of AbsRel and δ<1.25 beside them, and the
    paired CI resamples runs as well as test images."""
    logger = run_logger()
    _, device = use_runtime(runtime)
    runs = {name: [dirs] if isinstance(dirs, str) else list(dirs) for name, dirs in models.items()}
    counts = {len(dirs) for dirs in runs.values()}
    if len(counts) != 1 or 0 in counts:
        raise DagError(f"every training set needs the same number (>= 1) of nets, got {runs}")
    n_runs = counts.pop()
    splits: dict[str, tuple[Any, dict[str, Any]]] = {"world": (_world_test_pairs(world_test), {})}
    if nyu_path:
        nyu_kw = {"eigen_crop": True, "median_scaling": nyu_median_scaling}
        splits["nyu"] = (open_nyu(nyu_path), nyu_kw)
    per_image: dict[str, dict[str, Any]] = {split: {} for split in splits}
    results: dict[str, Any] = {split: {} for split in splits}
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
            results[split][name] = _mean_over_runs(run_means[split])
            rows = run_rows[split]
            per_image[split][name] = (
                rows[0] if n_runs == 1 else {k: np.stack([r[k] for r in rows]) for k in rows[0]}
            )
        logger.info("%s: %s", name, {split: results[split][name] for split in splits})
    tables = [f"### {split}\n\n{markdown_table(rows)}" for split, rows in results.items()]
    if reference is not None and reference in models and len(models) > 1:
        paired = {
            split: paired_comparison(per_image[split], reference, n_boot=n_boot) for split in splits
        }
        results["paired"] = {
            "reference": reference,
            "n_boot": n_boot,
            "confidence": CONFIDENCE,
            "runs": n_runs,
        }
        results["paired"].update(paired)
        tables.append(_paired_table(paired, reference, n_runs))
    Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_file).write_text(json.dumps(results, indent=2) + "\n")
    Path(table_file).write_text("\n\n".join(tables) + "\n")
    return metrics_file


def _mean_over_runs(means: list[dict[str, float]]) -> dict[str, float]:
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


def _paired_table(
    paired: dict[str, dict[str, dict[str, Any]]], reference: str, runs: int = 1
) -> str:
    """Markdown: each set − ``reference`` per split, AbsRel and δ<1.25 with 95 % CIs."""
    scope = (
        "one training run per set: the CI covers test images only"
        if runs == 1
        else f"{runs} training runs per set (seeds paired): the CI resamples runs and test images"
    )
    lines = [
        f"### paired difference vs {reference} (same test images, 95 % bootstrap CI; "
        f"{scope}; AbsRel: lower is better, δ<1.25: higher is better)",
        "",
        "| split | training set | AbsRel diff | δ<1.25 diff |",
        "|---|---|---|---|",
    ]
    for split, rows in paired.items():
        for name, row in rows.items():
            cells = [
                f"{row[f'{m}_diff']:+.3f} [{row[f'{m}_diff_ci_lo']:+.3f}, "
                f"{row[f'{m}_diff_ci_hi']:+.3f}]: {row[f'{m}_verdict']}"
                for m in PAIRED_METRICS
            ]
            lines.append(f"| {split} | {name} − {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
