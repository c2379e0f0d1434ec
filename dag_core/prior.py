"""The depth-domain diffusion prior ε_φ (DAG paper, "Depth prior guidance").

A small ε-prediction DDPM trained on *normalised* depth maps (see :mod:`dag_core.depthnorm`). At
sampling time depth prior guidance noises the strong head's estimate d^S_t to a level τ and asks
ε_φ to recover the noise (:func:`dag_core.guidance.dpg_loss`); a depth map that looks like real
depth is easy to denoise, so the gradient of that loss pulls the image towards plausible geometry.

The paper's prior works best at 128²; the CPU default here is 32² so that it trains in a few
minutes on two cores. Everything — the U-Net blocks, the noise schedule, ``add_noise`` — comes from
diffusers; a checkpoint directory holds

* ``unet/``       — ``UNet2DModel.save_pretrained`` (safetensors)
* ``scheduler/``  — ``DDPMScheduler.save_pretrained``
* ``prior.json``  — ``{"norm": DepthNorm.to_dict(), "resolution": r, "config": PriorConfig}``
* ``train_log.csv`` — ``step,loss`` for every optimisation step
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from dag_core.atomic import replace_dir
from dag_core.configs.prior import PriorConfig
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.resumable import TrainState

PRIOR_JSON = "prior.json"
TRAIN_LOG = "train_log.csv"


def prior_unet(config: PriorConfig) -> UNet2DModel:
    """A 1-in / 1-out channel ``UNet2DModel`` (plain diffusers down/up blocks, attention at the
    lowest level), randomly initialised from ``config.seed``."""
    n = len(config.channels)
    groups = math.gcd(8, *config.channels)
    torch.manual_seed(config.seed)
    return UNet2DModel(
        sample_size=config.resolution,
        in_channels=1,
        out_channels=1,
        block_out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        norm_num_groups=groups,
        attention_head_dim=None,
        num_train_timesteps=config.num_train_timesteps,
    )


def _check_batch(batch: torch.Tensor, step: int, resolution: int) -> torch.Tensor:
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 1:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise DagError(f"depth batch at step {step} must be (B,1,r,r), got {shape}")
    if batch.shape[-2:] != (resolution, resolution):
        raise DagError(
            f"depth batch at step {step} is {tuple(batch.shape[-2:])}, prior resolution is "
            f"{resolution}"
        )
    if not torch.isfinite(batch).all():
        raise DagError(f"depth batch at step {step} contains non-finite values")
    return batch.float()


def train_prior(
    depth_batches: Callable[[int], torch.Tensor],
    out_dir: str | Path,
    config: PriorConfig,
    norm: DepthNorm,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
    snapshot: TrainState | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Train ε_φ by the DDPM ε-objective  E‖η − ε_φ(√ᾱ_τ d + √(1−ᾱ_τ) η, τ)‖²  on normalised depth.

    ``depth_batches(step)`` returns a batch of NORMALISED depth (B, 1, r, r) with r =
    ``config.resolution``. The output directory is replaced atomically; returns its path.
    Trains on ``device`` (noise and τ drawn on the CPU from the seed). ``snapshot``: continue
    from its saved state and save the loop's state there as it goes (a stopped run resumes to
    the same bytes; :class:`~dag_core.resumable.TrainState`). ``progress(steps_done)`` is
    called after every step (e.g. a progress bar's update; None: not called).
    """
    out_dir = Path(out_dir)
    generator = torch.Generator().manual_seed(config.seed)
    unet = prior_unet(config).to(device)
    unet.train()
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr)
    rows: list[tuple[int, float]] = []
    every = max(1, config.steps // 10)
    start = 0
    if snapshot is not None and (saved := snapshot.load()) is not None:
        unet.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        rows, start = [tuple(r) for r in saved["rows"]], int(saved["step"])
        log(f"prior: steps 1-{start} from the saved state {snapshot.path}")
    for step in range(start, config.steps):
        depth = _check_batch(depth_batches(step), step, config.resolution)
        noise = torch.randn(depth.shape, generator=generator).to(device)
        tau = torch.randint(0, config.num_train_timesteps, (depth.shape[0],), generator=generator)
        depth, tau = depth.to(device), tau.to(device)
        noisy = scheduler.add_noise(depth, noise, tau)
        loss = F.mse_loss(unet(noisy, tau).sample, noise)
        if not torch.isfinite(loss):
            raise DagError(f"prior training diverged at step {step} (loss {loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows.append((step, loss.item()))
        if progress is not None:
            progress(step + 1)
        if step % every == 0 or step == config.steps - 1:
            log(f"prior step {step + 1}/{config.steps} loss {loss.item():.4f}")
        if snapshot is not None and snapshot.due() and step + 1 < config.steps:
            snapshot.save(
                {
                    "step": step + 1,
                    "model": unet.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "rows": rows,
                }
            )
    with replace_dir(out_dir) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        meta = {"norm": norm.to_dict(), "resolution": config.resolution, "config": config.to_dict()}
        (tmp / PRIOR_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        with open(tmp / TRAIN_LOG, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "loss"])
            writer.writerows(rows)
    return out_dir


@dataclass
class DepthPrior:
    """A frozen, loaded ε_φ with its noise schedule and the depth normalisation it learnt in."""

    unet: UNet2DModel
    scheduler: DDPMScheduler
    norm: DepthNorm

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def to(self, device: torch.device | str) -> DepthPrior:
        """Move the prior's U-Net to ``device`` (in place); returns ``self``."""
        self.unet.to(device)
        return self


def load_prior(path: str | Path) -> DepthPrior:
    """Load a checkpoint written by :func:`train_prior`, frozen (eval mode, no parameter grads)."""
    path = Path(path)
    meta_path = path / PRIOR_JSON
    if not meta_path.is_file():
        raise DagError(f"not a depth prior checkpoint (missing {meta_path})")
    try:
        meta = json.loads(meta_path.read_text())
        norm = DepthNorm.from_dict(meta["norm"])
        resolution = int(meta["resolution"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DagError(f"corrupt depth prior metadata {meta_path}: {exc}") from exc
    try:
        unet = UNet2DModel.from_pretrained(path / "unet", low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise DagError(f"corrupt depth prior checkpoint {path}: {exc}") from exc
    if int(unet.config.sample_size) != resolution or unet.config.in_channels != 1:
        raise DagError(
            f"depth prior {path}: U-Net does not match prior.json (resolution {resolution})"
        )
    unet.eval().requires_grad_(False)
    return DepthPrior(unet=unet, scheduler=scheduler, norm=norm)
