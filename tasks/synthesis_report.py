"""Task: how much guidance changed the samples (L_dc, L_dp per variant) and the sample sheet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dag_core.atomic import write_text_atomic
from dag_core.figures import sample_sheet, write_ply
from dag_core.runtime import RuntimeConfig
from dag_core.shards import read_samples, update_card
from dag_core.shards.card import mean_ci
from tasks import run_logger, stage_task
from tasks.synthesize import cached_models

#: what each loss of :func:`dag_core.synthesis.depth_losses` measures, for the dataset card
LOSS_NAMES = {
    "L_dc": "L_dc (strong vs weak head depth; lower = more consistent)",
    "L_dp": "L_dp (depth prior loss; lower = more plausible depth)",
}
REPORT_SAMPLES = 64
SHEET_COLUMNS = 8
PLY_SAMPLES = 2


@stage_task
def write_synthesis_report(
    out_dir: str,
    variants: list[str],
    base_model: str,
    heads: str,
    prior: str | None,
    metrics_file: str | None,
    report_dir: str | None,
    runtime: dict[str, Any] | None = None,
) -> str | None:
    """``metrics_file``: mean L_dc / L_dp of the first samples of each variant, evaluated on the
    finished images at t = 0 with the same noise for every variant (each variant's dataset card
    gets them with their 95 % CIs); ``report_dir``: the sample
    sheet (images, depth, normals; same seeds per column) and PLY point clouds. The losses are
    computed in fp32 on the runtime's device whatever its precision, so runs compare."""
    from dag_core.synthesis import depth_losses

    logger = run_logger()
    models = cached_models(base_model, heads, prior, RuntimeConfig.from_params(runtime))
    norm = models.heads.norm
    metrics: dict[str, dict[str, float]] = {}
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for variant in variants:
        samples = []
        for s in read_samples(Path(out_dir) / variant, columns=["rgb", "depth", "seed"]):
            samples.append(s)
            if len(samples) == REPORT_SAMPLES:
                break
        rgb = np.stack([s.rgb for s in samples])
        depth = np.stack([s.depth for s in samples])
        images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        losses = depth_losses(models, images, seeds=[s.seed or 0 for s in samples])
        metrics[variant] = {k: float(v.mean()) for k, v in losses.items()}
        metrics[variant]["n"] = len(samples)
        quality = [
            f"{LOSS_NAMES.get(k, k)} of the first {len(samples)} samples at t = 0: "
            f"{mean_ci(v.double().cpu().tolist())}"
            for k, v in losses.items()
        ]
        update_card(Path(out_dir) / variant, quality=quality)  # the card says it too
        rows[variant] = (rgb[:SHEET_COLUMNS], depth[:SHEET_COLUMNS])
        logger.info("%s: %s", variant, metrics[variant])
    if metrics_file:
        write_text_atomic(metrics_file, json.dumps(metrics, indent=2) + "\n")
    if report_dir:
        report = Path(report_dir)
        report.mkdir(parents=True, exist_ok=True)
        sample_sheet(
            rows, report / "samples.png", min_depth=norm.min_depth, max_depth=norm.max_depth
        )
        for variant, (rgb, depth) in rows.items():
            for j in range(min(PLY_SAMPLES, len(rgb))):
                write_ply(report / f"{variant}-{j}.ply", rgb[j], depth[j])
    return metrics_file
