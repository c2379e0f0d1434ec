"""Guided synthesis of image–depth datasets into resumable Parquet shards (paper §4, Fig. 1).

A synthesis run is a :class:`SynthesisSpec`: how many samples, how they are split into shards,
the sampler, and one :class:`~dag_core.guidance.GuidanceConfig` per *variant* (``unguided`` with
w_dc = w_dp = 0, ``dag`` with DCG + DPG, optionally DCG-only / DPG-only). Sample ``i`` of a run
uses the seed :func:`sample_seed` ``(seed, i)`` for its initial noise and for every sampler step,
so its pixels do not depend on the batch size, on which shard or worker renders it, or on the
variant — the unguided and guided sets share seeds, which makes dFID a paired comparison.

Shard ``k`` holds samples ``k·shard_size … (k+1)·shard_size − 1`` and is written atomically
(:func:`dag_core.shards.write_shard`), so a rerun after a crash renders only the missing shards
and ends with the same bytes as an uninterrupted run. Each row stores the image, its depth from
the strong head at t = 0 in metres, the label's uncertainty score (``uncertainty``: mean of the top
10 % of the per-pixel strong/weak disagreement or ensemble spread, from the same U-Net forward;
:mod:`dag_core.uncertainty`), the seed, and in ``meta`` the guidance scales, sampler, steps and
the hashes of the base model, heads and prior.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dag_core.backbone import load_base_model, model_hash
from dag_core.configs.synthesis import SPEC_NAME, SynthesisSpec, guidance_config
from dag_core.errors import DagError
from dag_core.features import FeatureExtractor
from dag_core.guidance import DepthGuidance, dcg_loss, dpg_loss
from dag_core.guidance_runtime import RuntimeGuidance
from dag_core.heads import DepthHeads
from dag_core.prior import DepthPrior, load_prior
from dag_core.runtime import RuntimeConfig
from dag_core.sampling import make_scheduler, sample
from dag_core.shards import Sample, write_shard


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` in a run seeded ``seed`` (independent of batching/sharding)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFF_FFFF


@dataclass
class SynthesisModels:
    """The frozen models a synthesis run needs, and their hashes for provenance."""

    unet: UNet2DModel
    scheduler: SchedulerMixin
    heads: DepthHeads
    prior: DepthPrior | None
    hashes: dict[str, str]


def load_models(
    base_model: str, heads: str, prior: str | None, device: str | torch.device = "cpu"
) -> SynthesisModels:
    """Load base model, heads and (optional) prior; check they fit together (DagError if not)."""
    base = load_base_model(base_model, device=device)
    if not Path(heads).is_dir():
        raise DagError(f"heads folder not found: {heads} (run stage train_heads first)")
    depth_heads = DepthHeads.load(heads).to(device).eval().requires_grad_(False)
    base_hash = model_hash(base.unet)
    depth_heads.check_compatible(base.unet, base_hash=base_hash)
    depth_prior = None
    if prior is not None:
        if not Path(prior).is_dir():
            raise DagError(f"prior folder not found: {prior} (run stage train_prior first)")
        depth_prior = load_prior(prior)
        depth_prior.unet.to(device)
        if depth_prior.norm != depth_heads.norm:
            raise DagError(
                f"prior {prior} uses depth normalisation {depth_prior.norm} but heads {heads} "
                f"use {depth_heads.norm}"
            )
    hashes = {"base_model": base_hash, "heads": model_hash(depth_heads)}
    if depth_prior is not None:
        hashes["prior"] = model_hash(depth_prior.unet)
    return SynthesisModels(base.unet, base.scheduler, depth_heads, depth_prior, hashes)


def check_spec_fits(models: SynthesisModels, spec: SynthesisSpec) -> None:
    """Build the scheduler and every variant's guidance once, without sampling: DagError for a
    step count beyond the model's T, a missing prior, or a tau the prior cannot take."""
    make_scheduler(models.scheduler, spec.sampler, spec.steps)
    for variant, settings in spec.variants.items():
        config = guidance_config(variant, settings)
        if config.w_dp > 0 and models.prior is None:
            raise DagError(f"variant '{variant}' has w_dp={config.w_dp} but no depth prior")
        if config.enabled:
            guidance = DepthGuidance(models.unet, models.heads, models.prior, config)
            train_steps = int(models.scheduler.config.num_train_timesteps)
            if guidance.num_train_timesteps != train_steps:
                raise DagError(
                    f"heads assume T={guidance.num_train_timesteps}, base model has T={train_steps}"
                )


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] (B, 3, H, W) → uint8 (B, H, W, 3)."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def render_shard(
    models: SynthesisModels,
    spec: SynthesisSpec,
    variant: str,
    shard: int,
    out_dir: str | Path,
    *,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
    runtime: RuntimeConfig | None = None,
) -> Path:
    """Sample shard ``shard`` of ``variant`` and write it atomically into ``out_dir`` (each row
    with its label's uncertainty score).

    ``runtime`` (default: today's fp32 path) selects bf16 autocast, the heads' evaluation
    resolution, guidance micro-batches and deterministic resizes (:mod:`dag_core.runtime`).
    """
    config = guidance_config(variant, spec.variants[variant])
    if config.w_dp > 0 and models.prior is None:
        raise DagError(f"variant '{variant}' has w_dp={config.w_dp} but no depth prior was given")
    rt = runtime or RuntimeConfig()
    guidance = (
        RuntimeGuidance(models.unet, models.heads, models.prior, config, rt)
        if config.enabled
        else None
    )
    meta = {
        "variant": variant,
        "guidance": asdict(config),
        "sampler": spec.sampler,
        "steps": spec.steps,
        "eta": spec.eta,
        "hashes": spec.hashes,
    }
    if spec.runtime:
        meta["runtime"] = spec.runtime
    indices = list(spec.shard_indices(shard))
    samples: list[Sample] = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        seeds = [sample_seed(spec.seed, i) for i in chunk]
        scheduler = make_scheduler(models.scheduler, spec.sampler, spec.steps)
        with rt.autocast(models.unet.device):
            result = sample(
                models.unet, scheduler, seeds, guidance=guidance, heads=models.heads, eta=spec.eta
            )
        rgb = _to_uint8(result.images)
        depth = result.depth[:, 0].float().cpu().numpy()
        uncertainty = result.uncertainty.float().cpu().tolist()
        for j, i in enumerate(chunk):
            samples.append(
                Sample(
                    id=f"{variant}-{i:08d}",
                    rgb=rgb[j],
                    depth=depth[j],
                    seed=seeds[j],
                    source=f"dag-synthesis/{variant}",
                    meta={"index": i, **meta},
                    uncertainty=uncertainty[j],
                )
            )
        if progress is not None:
            progress(len(chunk))
    return write_shard(out_dir, shard, samples, depth_dtype=spec.depth_dtype, overwrite=True)


def spec_matches(directory: str | Path, record: dict[str, Any]) -> bool:
    """Whether ``directory`` holds shards of exactly this variant spec (safe to resume into).

    Variants compare by their effective guidance (every :class:`GuidanceConfig` field, defaults
    filled in), so a spec written from a partial ``guidance`` group matches the same settings
    written out in full: the shards would be byte-identical (each row records the full config).
    """
    path = Path(directory) / SPEC_NAME
    if not path.is_file():
        return False
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return _effective(stored) == _effective(json.loads(json.dumps(record)))


def _effective(record: Any) -> Any:
    """A spec record with each variant's settings replaced by its full guidance config."""
    if not isinstance(record, dict) or not isinstance(record.get("variants"), dict):
        return record
    try:
        variants = {n: asdict(guidance_config(n, s)) for n, s in record["variants"].items()}
    except DagError:
        return record
    return {**record, "variants": variants}


def spec_digest(record: dict[str, Any]) -> str:
    """Short hash of a spec record (for logs)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]


@torch.no_grad()
def depth_losses(
    models: SynthesisModels,
    images: torch.Tensor,
    *,
    t: int = 0,
    tau: int = 100,
    seeds: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample L_dc and L_dp (paper Eqs. for DCG/DPG) of finished images, evaluated at ``t``.

    Used to report how much guidance changed the samples: guided samples should show lower
    depth-consistency and depth-prior losses than unguided ones with the same seeds.
    """
    device = next(models.unet.parameters()).device
    images = images.to(device)
    steps = torch.full((images.shape[0],), t, device=device, dtype=torch.long)
    with FeatureExtractor(models.unet, models.heads.blocks) as extract:
        _, feats = extract(images, steps)
    d_s, d_w = models.heads(feats, steps)
    out = {"L_dc": dcg_loss(d_s, d_w)}
    if models.prior is not None:
        gens = [torch.Generator().manual_seed(s) for s in (seeds or range(images.shape[0]))]
        r = models.prior.resolution
        noise = torch.stack([torch.randn(1, r, r, generator=g) for g in gens]).to(device)
        taus = torch.full((images.shape[0],), tau, device=device, dtype=torch.long)
        out["L_dp"] = dpg_loss(models.prior, d_s, taus, noise)
    return out
