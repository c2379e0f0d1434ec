"""Train the downstream depth network for a fixed budget on shard datasets.

Every training set gets the same network, steps and batch size (:class:`DownstreamConfig`), so
only the data differs. Losses (``config.loss``), both on valid pixels only
(:meth:`DepthNorm.valid`):

* ``l1_log`` — L1 between predicted and true depth in the normalised space of
  :class:`DepthNorm` (log-depth for the default ``log`` normalisation);
* ``silog``  — the scale-invariant log loss of Eigen et al. (2014) on depth in metres,
  ``sqrt(mean(g²) − λ·mean(g)²)`` with ``g = log d̂ − log d`` and λ = 0.85.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from dag_core.depthnorm import DepthNorm
from dag_core.downstream.config import DownstreamConfig
from dag_core.downstream.data import SHUFFLE_BUFFER, ShuffledCycle, square_transform
from dag_core.downstream.model import DepthNet
from dag_core.errors import DagError
from dag_core.shards import ShardDataset

SILOG_LAMBDA = 0.85


def _loss(pred: Tensor, depth: Tensor, norm: DepthNorm, kind: str) -> Tensor:
    """``kind`` loss of normalised predictions ``pred`` against metric ``depth`` (valid pixels)."""
    valid = DepthNorm.valid(depth)
    if not valid.any():
        return pred.sum() * 0.0
    if kind == "l1_log":
        target = norm.normalize(torch.where(valid, depth, torch.ones_like(depth)))
        return (pred - target)[valid].abs().mean()
    g = norm.denormalize(pred)[valid].log() - depth[valid].clamp(norm.min_depth, None).log()
    return (g.square().mean() - SILOG_LAMBDA * g.mean().square()).clamp_min(1e-12).sqrt()


def train_depth_net(
    dataset_dirs: Sequence[str | Path],
    config: DownstreamConfig,
    norm: DepthNorm,
    *,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
) -> tuple[DepthNet, list[dict[str, float]]]:
    """Train a :class:`DepthNet` for exactly ``config.steps`` steps on the shard datasets given.

    Trains on ``device``. Returns the network (eval mode, CPU) and one log row
    ``{"step", "loss"}`` per step. Raises :class:`DagError` naming a missing or empty dataset
    directory. Deterministic in ``config.seed``.
    """
    if isinstance(dataset_dirs, str | Path) or not dataset_dirs:
        raise DagError(
            f"dataset_dirs must be a non-empty list of directories, got {dataset_dirs!r}"
        )
    transform = square_transform(config.resolution)
    datasets = [ShardDataset(d, transform=transform) for d in dataset_dirs]
    stream = ShuffledCycle(torch.utils.data.ChainDataset(datasets), config.seed, SHUFFLE_BUFFER)
    loader = torch.utils.data.DataLoader(stream, batch_size=config.batch_size, num_workers=0)
    total = sum(len(d) for d in datasets)
    log(f"depth net: {total} training samples from {len(datasets)} dir(s), {config.steps} steps")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DepthNet(config.channels).to(device)
    flips = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=0.1
    )
    model.train()
    rows: list[dict[str, float]] = []
    every = max(1, config.steps // 10)
    for step, batch in zip(range(1, config.steps + 1), loader, strict=False):
        image, depth = batch["image"], batch["depth"]
        flip = torch.rand(image.shape[0], generator=flips) < 0.5
        image = torch.where(flip[:, None, None, None], image.flip(-1), image)
        depth = torch.where(flip[:, None, None, None], depth.flip(-1), depth)
        image, depth = image.to(device), depth.to(device)
        loss = _loss(model(image), depth, norm, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = loss.item()
        rows.append({"step": step, "loss": value})
        if step % every == 0 or step == config.steps:
            log(f"depth net step {step}/{config.steps}: {config.loss} {value:.4f}")
    return model.cpu().eval(), rows
