"""Tasks for stage ``base_model``: train the embedded tiny DDPM, or pin a pretrained one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from dag_core.atomic import replace_dir
from dag_core.backbone import (
    POINTER_FILE,
    TrainConfig,
    load_base_model,
    model_hash,
    train_base_model,
)
from dag_core.errors import DagError
from dag_core.runtime import use_runtime
from dag_core.world import render
from tasks import config_from_params, run_logger, stage_task


def world_batches(resolution: int, batch_size: int, seed: int):
    """Batch ``step`` = world scenes seeded (seed, step, j), as float images in [-1, 1]."""

    def batches(step: int) -> torch.Tensor:
        first = (seed * 1_000_003 + step * batch_size) % (2**31 - batch_size)
        rgb, _ = render(list(range(first, first + batch_size)), resolution)
        return rgb.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    return batches


class _Steps(Dataset):
    """Step i → ``batches(i)``, so DataLoader workers can render ahead of the training loop."""

    def __init__(self, batches: Callable[[int], torch.Tensor], steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> torch.Tensor:
        return self.batches(step)


def prefetched(
    batches: Callable[[int], torch.Tensor], steps: int, workers: int
) -> Callable[[int], torch.Tensor]:
    """``batches`` rendered ahead by ``workers`` processes (0 = in the loop, as before); the
    batch of step i is the same either way, it is only computed earlier and in parallel."""
    if workers <= 0:
        return batches
    loader = DataLoader(
        _Steps(batches, steps), batch_size=None, num_workers=workers, prefetch_factor=4
    )
    stream = iter(loader)
    expected = [0]

    def batch(step: int) -> torch.Tensor:
        if step != expected[0]:
            raise DagError(f"prefetched batches must be read in order: got {step}, not {expected}")
        expected[0] += 1
        return next(stream)

    return batch


@stage_task
def train_embedded_base_model(
    out_dir: str,
    config: dict[str, Any],
    runtime: dict[str, Any] | None = None,
    render_workers: int = 0,
) -> str:
    """Train the tiny DDPM on the procedural world on the runtime device (bf16 autocast when
    asked; ``render_workers`` processes render the scenes ahead so a GPU is not left waiting);
    write a diffusers folder (safetensors)."""
    logger = run_logger()
    cfg = config_from_params(TrainConfig, config, "base_model training")
    rt, device = use_runtime(runtime)
    logger.info("base model training on %s (%s)", device, rt.precision)
    with replace_dir(out_dir) as tmp, rt.autocast(device):
        batches = prefetched(
            world_batches(cfg.resolution, cfg.batch_size, cfg.seed), cfg.steps, render_workers
        )
        train_base_model(batches, tmp, cfg, log=logger.info, device=device)
    logger.info("base model written to %s (hash %s)", out_dir, model_hash(out_dir))
    return out_dir


@stage_task
def pin_pretrained_base_model(out_dir: str, pretrained: str) -> str:
    """Check that ``pretrained`` (local folder or hub id) loads, and record it in ``out_dir``."""
    model = load_base_model(pretrained)
    record = {
        "pretrained": pretrained,
        "hash": model_hash(model.unet),
        "resolution": model.resolution,
        "in_channels": model.in_channels,
    }
    with replace_dir(out_dir) as tmp:
        (Path(tmp) / POINTER_FILE).write_text(json.dumps(record, indent=2) + "\n")
    run_logger().info("base model pinned: %s", record)
    return out_dir
