"""Task for stage ``train_prior``: the depth-domain diffusion prior ε_φ (paper §4.2, DPG)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dag_core.atomic import replace_dir
from dag_core.errors import DagError
from dag_core.heads import DepthHeads
from dag_core.prior import PriorConfig, train_prior
from dag_core.resumable import input_digest, training_snapshot
from dag_core.runtime import use_runtime
from dag_core.shards import load_tensors
from dag_core.world import render
from tasks import config_from_params, run_logger, stage_task
from tasks.artifacts import Progress

EXTRA_WORLD_SEED_BASE = 50_000_000  # disjoint from label-subset scenes (seeds < 1e6)


def prior_config(config: dict[str, Any]) -> PriorConfig:
    return config_from_params(PriorConfig, config, "prior")


def depth_pool(labelled: str, extra_world: int, extra_depth: str | None) -> torch.Tensor:
    """All depth maps (N, 1, H, W) in metres: labelled train pairs + same-domain extras."""
    _, depth = load_tensors(Path(labelled) / "train")
    pools = [depth]
    if extra_world:
        summary = json.loads((Path(labelled) / "subset.json").read_text())
        if summary.get("source") != "world":
            raise DagError(
                f"extra_world={extra_world} adds procedural-world depth, but the labelled subset "
                f"comes from '{summary.get('source')}'; set extra_world: 0 (or extra_depth)"
            )
        for start in range(0, extra_world, 256):
            stop = min(extra_world, start + 256)
            seeds = range(EXTRA_WORLD_SEED_BASE + start, EXTRA_WORLD_SEED_BASE + stop)
            _, d = render(list(seeds), depth.shape[-1])
            pools.append(d[:, None])
    if extra_depth:
        pools.append(load_tensors(extra_depth)[1])
    size = depth.shape[-2:]
    return torch.cat([F.interpolate(p, size=size, mode="nearest-exact") for p in pools])


@stage_task
def fit_prior(
    labelled: str,
    heads: str,
    out_dir: str,
    config: dict[str, Any],
    extra_world: int,
    extra_depth: str | None,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Train ε_φ on normalised depth at the prior resolution (norm taken from the heads), on the
    runtime device."""
    logger = run_logger()
    cfg = prior_config(config)
    rt, device = use_runtime(runtime)
    norm = DepthHeads.load(heads).norm
    depth = depth_pool(labelled, extra_world, extra_depth)
    x = norm.normalize(depth)
    x = F.interpolate(x, size=(cfg.resolution, cfg.resolution), mode="bilinear", antialias=True)
    x = torch.where(_measured(depth, x), x, torch.ones_like(x))
    logger.info(
        "depth prior: %d maps at %d², norm %s, on %s", x.shape[0], cfg.resolution, norm, device
    )

    def batches(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, x.shape[0], (cfg.batch_size,), generator=g)
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        b = x[idx]
        return torch.where(flip[:, None, None, None], b.flip(-1), b)

    key = {
        "config": cfg.to_dict(),
        "inputs": [input_digest(p) for p in (labelled, heads, extra_depth)],
        "extra_world": extra_world,
        "runtime": runtime,
    }
    with (
        training_snapshot(out_dir, key, cfg.steps, "prior") as snapshot,
        replace_dir(out_dir) as tmp,
        rt.autocast(device),
        Progress("prior training steps", cfg.steps, "train-prior-steps") as progress,
    ):
        train_prior(
            batches,
            tmp,
            cfg,
            norm,
            log=logger.info,
            device=device,
            snapshot=snapshot,
            progress=progress,
        )
    return out_dir


def _measured(depth: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Pixels whose (resized) depth was measured; holes are treated as far (x = 1)."""
    valid = (depth > 0).float()
    return F.interpolate(valid, size=x.shape[-2:], mode="area") > 0.5
