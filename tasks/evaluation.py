"""Tasks for the evaluation stages: reference sets, dFID / FID, downstream depth training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dag_core.atomic import replace_dir, write_text_atomic
from dag_core.cards import reference_card
from dag_core.depthnorm import DepthNorm
from dag_core.downstream import (
    DownstreamConfig,
    downstream_report,
    evaluate_training_sets,
    save_depth_net,
    train_depth_net,
)
from dag_core.metrics.comparison import compare_variants, load_scorer, read_floor
from dag_core.metrics.fid import resolve_extractor
from dag_core.metrics.scorer import REAL_FEATURES_FILE
from dag_core.nyu import open_nyu
from dag_core.runtime import use_runtime
from dag_core.shards import Sample, read_arrays, read_samples, write_dataset
from dag_core.world import iter_scenes
from tasks import config_from_params, run_logger, stage_task
from tasks.artifacts import Progress, feature_bars

REFERENCE_SEED_BASE = 100_000_000  # disjoint from label-subset and prior scenes


def downstream_config(config: dict[str, Any]) -> DownstreamConfig:
    return config_from_params(DownstreamConfig, config, "depth-network")


@stage_task
def write_world_reference(
    out_dir: str,
    resolution: int,
    n_train: int,
    n_test: int,
    n_floor: int = 0,
    license: str = "other",
) -> str:
    """World pairs the labelled subset never sees: ``train`` for the reference depth estimator,
    ``test`` as the real image set for FID and the held-out procedural test split, and (n_floor
    > 0) ``floor``: more held-out pairs that give the FID / dFID a real set reaches at the
    generated sets' count (the dfid stage's floor). Each split has its dataset card (``license``
    its licence field)."""
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
            sizes = {split: count for split, _, count in splits}
            card = reference_card(name, license=license, resolution=resolution, rows=sizes)
            write_dataset(tmp / name, samples, shard_size=1000, depth_dtype="float16", card=card)
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
    with (
        rt.autocast(device),
        Progress("reference estimator steps", cfg.steps, "reference-steps") as progress,
    ):
        model, _ = train_depth_net(
            train_dirs, cfg, depth_norm, log=logger.info, device=device, progress=progress
        )
    with replace_dir(out_dir) as tmp:
        save_depth_net(model, cfg, depth_norm, tmp)
    return out_dir


@stage_task
def write_real_features(
    real: str,
    estimator: str,
    extractor: str,
    batch_size: int,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Compute the real set's Inception features (images, and ``estimator``'s depth) and store
    them in the estimator's folder (:meth:`~dag_core.metrics.scorer.Scorer.save_real`)."""
    _, device = use_runtime(runtime)
    score = load_scorer(
        real, estimator, extractor, batch_size, n_boot=10, device=device, progress=feature_bars
    )
    path = score.save_real(Path(estimator) / REAL_FEATURES_FILE)
    run_logger().info("features of %s (%d images) stored in %s", real, score.n_real, path)
    return str(path)


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
    images = {v: read_arrays(Path(synthetic) / v, max_samples) for v in variants}
    n_max = max(len(rgb) for rgb, _ in images.values())
    floor_pairs = read_floor(floor, n_max, "dfid") if floor else None
    score = load_scorer(
        real, estimator, extractor, batch_size, n_boot, device, progress=feature_bars
    )
    logger.info("real set %s: features %s", real, score.real_source)
    sets = {v: score.features(*pairs) for v, pairs in images.items()}
    results = compare_variants(
        score,
        sets,
        reference_variant,
        extractor=resolve_extractor(extractor),
        floor=floor,
        floor_pairs=floor_pairs,
        log=logger.info,
    )
    write_text_atomic(metrics_file, json.dumps(results, indent=2) + "\n")
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
    splits: dict[str, tuple[Any, dict[str, Any]]] = {"world": (_world_test_pairs(world_test), {})}
    if nyu_path:
        nyu_kw = {"eigen_crop": True, "median_scaling": nyu_median_scaling}
        splits["nyu"] = (open_nyu(nyu_path), nyu_kw)
    results, per_image, n_runs = evaluate_training_sets(
        models, splits, device=device, log=logger.info
    )
    results, table = downstream_report(results, per_image, reference, n_boot=n_boot, runs=n_runs)
    write_text_atomic(metrics_file, json.dumps(results, indent=2) + "\n")
    write_text_atomic(table_file, table)
    return metrics_file
