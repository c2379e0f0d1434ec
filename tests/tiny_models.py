"""Tiny, randomly initialised model folders in the real on-disk layouts (no hub downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler

from dag_core.backbone import model_hash
from dag_core.depthnorm import DepthNorm
from dag_core.features import decoder_layers
from dag_core.heads import DepthHeads, HeadConfig
from dag_core.prior import DepthPrior, PriorConfig, prior_unet, train_prior
from dag_core.unet_configs import CHURCH_256_SCHEDULER, tiny_unet


def write_tiny_models(root: Path, resolution: int = 32) -> dict[str, str]:
    """Base model (church-256 layout, DDPMPipeline folder), random heads, a 2-step prior."""
    unet = tiny_unet(resolution, seed=0)
    scheduler = DDPMScheduler.from_config(CHURCH_256_SCHEDULER)
    base = root / "base"
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(base, safe_serialization=True)
    norm = DepthNorm()
    torch.manual_seed(0)
    config = HeadConfig()
    channels = {layer.index: layer.channels for layer in decoder_layers(unet)}
    heads = DepthHeads(config, norm, channels, resolution, base_hash=model_hash(unet))
    heads.eval()
    heads.save(root / "heads")
    prior_cfg = PriorConfig(resolution=16, channels=(16, 32), steps=2, batch_size=2)
    train_prior(
        lambda step: torch.zeros(2, 1, 16, 16), root / "prior", prior_cfg, norm, log=lambda _: None
    )
    return {"base_model": str(base), "heads": str(root / "heads"), "prior": str(root / "prior")}


def tiny_heads(unet: torch.nn.Module, resolution: int = 8, seed: int = 0) -> DepthHeads:
    """Random MLP-S / MLP-W (hidden 16, time dim 8) on ``unet``'s S and W layers, eval mode."""
    config = HeadConfig(hidden=(16,), time_dim=8)
    layers = decoder_layers(unet)
    channels = {k: layers[k].channels for k in (*config.strong_blocks, *config.weak_blocks)}
    torch.manual_seed(seed)
    return DepthHeads(config, DepthNorm(), channels, resolution=resolution).eval()


def tiny_prior(resolution: int = 16) -> DepthPrior:
    """A random frozen depth prior ε_φ (channels 8, 16) with the default DDPM scheduler."""
    net = prior_unet(PriorConfig(resolution=resolution, channels=(8, 16))).eval()
    return DepthPrior(net.requires_grad_(False), DDPMScheduler(), DepthNorm())
