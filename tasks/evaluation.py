"""Tasks for the evaluation stages: reference sets, dFID / FID, downstream depth training."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dag_core.atomic import replace_dir
from dag_core.depthnorm import DepthNorm
from dag_core.downstream import (
    DownstreamConfig,
    evaluate,
    load_depth_net,
    markdown_table,
    predict_depth,
    save_depth_net,
    train_depth_net,
)
from dag_core.errors import DagError
from dag_core.metrics.fid import (
    depth_to_rgb8,
    fid_from_statistics,
    fid_statistics,
    resolve_extractor,
)
from dag_core.nyu import open_nyu
from dag_core.runtime import use_runtime
from dag_core.shards import Sample, read_samples, write_dataset
from dag_core.synthesis import SPEC_NAME
from dag_core.world import iter_scenes
from tasks import config_from_params, run_logger, stage_task

REFERENCE_SEED_BASE = 100_000_000  # disjoint from label-subset and prior scenes


def downstream_config(config: dict[str, Any]) -> DownstreamConfig:
    return config_from_params(DownstreamConfig, config, "depth-network")


@stage_task
def write_world_reference(out_dir: str, resolution: int, n_train: int, n_test: int) -> str:
    """World pairs the labelled subset never sees: ``train`` for the reference depth estimator,
    ``test`` as the real image set for FID and the held-out procedural test split."""
    with replace_dir(out_dir) as tmp:
        for name, start, count in (
            ("train", REFERENCE_SEED_BASE, n_train),
            ("test", REFERENCE_SEED_BASE + n_train, n_test),
        ):
            samples = (
                Sample(id=f"world-{s:09d}", rgb=rgb, depth=d, seed=s, source="world")
                for s, rgb, d in iter_scenes(start, count, resolution)
            )
            write_dataset(tmp / name, samples, shard_size=1000, depth_dtype="float16")
    run_logger().info("world reference sets: %d train, %d test", n_train, n_test)
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
    rgb = []
    for s in read_samples(directory, columns=["rgb"]):
        rgb.append(s.rgb)
        if limit is not None and len(rgb) == limit:
            break
    if not rgb:
        raise DagError(f"no images in {directory}")
    return np.stack(rgb)


@stage_task
def compute_dfid(
    synthetic: str,
    variants: list[str],
    real: str,
    estimator: str,
    extractor: str,
    batch_size: int,
    max_samples: int | None,
    metrics_file: str,
    runtime: dict[str, Any] | None = None,
) -> str:
    """dFID (paper §5: FID between depth maps estimated from generated and from real images by
    the same reference estimator) and image FID, per synthetic variant."""
    logger = run_logger()
    name = resolve_extractor(extractor)
    _, device = use_runtime(runtime)
    ref = _Reference(real, estimator, name, batch_size, max_samples, device)
    results: dict[str, Any] = {"extractor": name, "n_real": ref.n, "variants": {}}
    for variant in variants:
        rgb = _images(Path(synthetic) / variant, max_samples)
        row = {**ref.score(rgb), "n": len(rgb)}
        results["variants"][variant] = row
        logger.info("%s: %s", variant, row)
    Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_file).write_text(json.dumps(results, indent=2) + "\n")
    return metrics_file


def _write_sweep(path: str | Path, rows: list[dict[str, float]]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["w", "dfid", "fid"])
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["w"]))


@stage_task
def sweep_from_variants(synthetic: str, metrics_file: str, plots_file: str) -> str:
    """Without a sweep, dFID vs w from the variants that use one scale w = w_dc = w_dp (e.g.
    unguided w = 0 and dag w = 40), read from their ``_spec.json``."""
    scores = json.loads(Path(metrics_file).read_text())["variants"]
    rows = []
    for variant, score in scores.items():
        spec = json.loads((Path(synthetic) / variant / SPEC_NAME).read_text())
        scales = spec["variants"][variant]
        w_dc, w_dp = float(scales.get("w_dc", 40.0)), float(scales.get("w_dp", 40.0))
        if w_dc == w_dp:
            rows.append({"w": w_dc, "dfid": score["dfid"], "fid": score["fid"]})
    _write_sweep(plots_file, rows)
    return plots_file


@stage_task
def dfid_sweep(
    sweep: dict[str, Any],
    real: str,
    estimator: str,
    extractor: str,
    batch_size: int,
    plots_file: str,
    runtime: dict[str, Any] | None = None,
) -> str:
    """dFID vs guidance scale w = w_dc = w_dp (paper Fig. 8): sample ``num_samples`` per scale
    with the same seeds, estimate depth, compare with the real set; one CSV row per scale."""
    from dag_core.synthesis import SynthesisSpec, render_shard
    from tasks.synthesize import cached_models

    logger = run_logger()
    rt, device = use_runtime(runtime)
    cfg = dict(sweep)
    scales = [float(w) for w in cfg.pop("scales")]
    n = int(cfg.pop("num_samples", 64))
    models = cached_models(cfg.pop("base_model"), cfg.pop("heads"), cfg.pop("prior"), rt)
    sample_batch = int(cfg.pop("batch_size", 16))
    guidance = cfg.pop("guidance", {})
    ref = _Reference(real, estimator, resolve_extractor(extractor), batch_size, None, device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in scales:
            variant = f"w{w:g}"
            spec = SynthesisSpec(
                num_samples=n,
                shard_size=n,
                variants={variant: {**guidance, "w_dc": w, "w_dp": w}},
                runtime=rt.result_record(),
                **cfg,
            )
            path = render_shard(
                models, spec, variant, 0, Path(tmp) / variant, batch_size=sample_batch, runtime=rt
            )
            rgb = _images(path.parent, None)
            rows.append({"w": w, **ref.score(rgb)})
            logger.info("sweep %s", rows[-1])
    _write_sweep(plots_file, rows)
    return plots_file


class _Reference:
    """Inception statistics of the real images and of their estimated depth, computed once."""

    def __init__(
        self,
        real: str,
        estimator: str,
        extractor: str,
        batch_size: int,
        limit: int | None,
        device: torch.device | None = None,
    ):
        self.net, net_config, self.norm = load_depth_net(estimator)  # loaded once, reused
        device = device or torch.device("cpu")
        self.net.to(device)
        self.resolution = net_config.resolution
        self.kw = {"batch_size": batch_size, "extractor": extractor, "device": device}
        rgb = _images(real, limit)
        self.n = len(rgb)
        self.image_stats = fid_statistics(rgb, **self.kw)
        self.depth_stats = self.depth_statistics(rgb)

    def depth_statistics(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics of the reference estimator's depth for ``rgb``, in chunks of 64 images."""
        chunks = [rgb[i : i + 64] for i in range(0, len(rgb), 64)]
        depth = np.concatenate(
            [predict_depth(self.net, c, self.norm, self.resolution) for c in chunks]
        )
        lo, hi = self.norm.min_depth, self.norm.max_depth
        return fid_statistics(depth_to_rgb8(depth, min_depth=lo, max_depth=hi), **self.kw)

    def score(self, rgb: np.ndarray) -> dict[str, float]:
        """dFID and FID of generated images against the real set."""
        return {
            "dfid": fid_from_statistics(self.depth_statistics(rgb), self.depth_stats),
            "fid": fid_from_statistics(fid_statistics(rgb, **self.kw), self.image_stats),
        }


def _world_test_pairs(directory: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(s.rgb, s.depth) for s in read_samples(directory, columns=["rgb", "depth"])]


@stage_task
def evaluate_depth_nets(
    models: dict[str, str],
    world_test: str,
    nyu_path: str | None,
    nyu_median_scaling: bool,
    metrics_file: str,
    table_file: str,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Evaluate each trained depth net on the procedural test split and, if given, NYU-Depth v2."""
    logger = run_logger()
    _, device = use_runtime(runtime)
    world_pairs = _world_test_pairs(world_test)
    nyu_pairs = open_nyu(nyu_path) if nyu_path else None
    results: dict[str, Any] = {"world": {}, "nyu": {}}
    for name, model_dir in models.items():
        model, cfg, norm = load_depth_net(model_dir)
        model.to(device)
        results["world"][name] = evaluate(model, world_pairs, norm, cfg.resolution)
        if nyu_pairs is not None:
            results["nyu"][name] = evaluate(
                model,
                nyu_pairs,
                norm,
                cfg.resolution,
                eigen_crop=True,
                median_scaling=nyu_median_scaling,
            )
        logger.info("%s: world %s", name, results["world"][name])
    if nyu_pairs is None:
        del results["nyu"]
    Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics_file).write_text(json.dumps(results, indent=2) + "\n")
    tables = [f"### {split}\n\n{markdown_table(rows)}" for split, rows in results.items()]
    Path(table_file).write_text("\n\n".join(tables) + "\n")
    return metrics_file
