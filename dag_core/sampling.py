"""Unguided and depth-guided sampling with diffusers schedulers (paper, "Depth guided sampling").

Sample i draws its initial noise and every scheduler noise from its own ``torch.Generator`` seeded
by ``seeds[i]`` (diffusers' ``randn_tensor`` with a list of generators), so an image depends on its
seed only, never on how samples were batched. The guided update applies the guidance gradient
g of :mod:`dag_core.guidance` under the config's ``scale_mode``
(:func:`dag_core.strength.guided_step`: paper = classifier-guidance convention, mean =
``step(ε).prev_sample − g``); with all guidance scales at 0 the loop is the unguided sampler
bit for bit and builds no autograd graph.

After the last step the strong head labels the clean sample (t = 0, :func:`final_label`); the same
U-Net forward gives the label's uncertainty score (:mod:`dag_core.uncertainty`: the mean of the
top 10 % of the per-pixel strong/weak disagreement, or of the ensemble's spread).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from pydantic import Field
from tqdm.auto import tqdm

from dag_core.errors import DagError, ParamError
from dag_core.features import FeatureExtractor
from dag_core.guidance import DepthGuidance
from dag_core.heads import DepthHeads
from dag_core.strength import guided_step
from dag_core.uncertainty import label_uncertainty
from dag_core.validation import check_value

SAMPLERS: dict[str, type[SchedulerMixin]] = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
Steps = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0)]


def make_scheduler(
    base_scheduler: SchedulerMixin | Mapping[str, Any], sampler: str, num_inference_steps: int
) -> SchedulerMixin:
    """A fresh DDPM or DDIM scheduler built from the base model's scheduler config, with
    ``set_timesteps(num_inference_steps)`` already called."""
    if sampler not in SAMPLERS:
        raise DagError(f"unknown sampler '{sampler}'; expected one of {', '.join(SAMPLERS)}")
    config = base_scheduler.config if isinstance(base_scheduler, SchedulerMixin) else base_scheduler
    scheduler = SAMPLERS[sampler].from_config(dict(config))
    train_steps = int(scheduler.config.num_train_timesteps)
    check_value(Steps, num_inference_steps, "num_inference_steps")
    if num_inference_steps > train_steps:
        raise ParamError(
            "num_inference_steps", num_inference_steps, f"must be <= the model's T = {train_steps}"
        )
    scheduler.set_timesteps(num_inference_steps)
    return scheduler


def per_sample_generators(
    seeds: Sequence[int], device: torch.device | str
) -> list[torch.Generator]:
    """One ``torch.Generator`` per sample on ``device``, seeded by ``seeds[i]``."""
    if len(seeds) == 0:
        raise DagError("need at least one seed")
    generators = []
    for seed in seeds:
        check_value(Seed, seed, "seed")
        generators.append(torch.Generator(device=device).manual_seed(seed))
    return generators


@dataclass
class SampleResult:
    """Images (B,3,H,W) in [-1, 1]; the strong head's depth (B,1,R,R) in metres at t = 0 on the
    final x_0 and its uncertainty score (B,) float32 (both None without heads); per-step
    per-sample guidance logs (empty without guidance)."""

    images: torch.Tensor
    depth: torch.Tensor | None = None
    losses: list[dict[str, list[float]]] = field(default_factory=list)
    uncertainty: torch.Tensor | None = None


@torch.no_grad()
def final_label(
    unet: UNet2DModel, heads: DepthHeads, x_0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The label of clean images ``x_0`` from ONE U-Net forward at t = 0: the strong head's depth
    in metres (B,1,R,R) — d^S, the ensemble mean when there is one — and its uncertainty (B,),
    :func:`dag_core.uncertainty.label_uncertainty` of the same evaluation of the heads."""
    t = torch.zeros(x_0.shape[0], dtype=torch.long, device=x_0.device)
    with FeatureExtractor(unet, heads.blocks) as extractor:
        features = extractor.features(x_0, t)
    out = heads.predict(features, t)
    return heads.norm.denormalize(out.strong), label_uncertainty(out.strong, out.weak, out.members)


def sample(
    unet: UNet2DModel,
    scheduler: SchedulerMixin,
    seeds: Sequence[int],
    *,
    guidance: DepthGuidance | None = None,
    heads: DepthHeads | None = None,
    eta: float = 0.0,
    progress: bool = False,
) -> SampleResult:
    """Run the reverse process of ``scheduler`` (timesteps already set) for one sample per seed.

    With ``guidance`` each step is the paper's depth-guided update; ``heads`` (default: the
    guidance's) also yield the final depth and its uncertainty, the same way with or without
    guidance. ``eta`` is DDIM's stochasticity (DDIM only).
    """
    if not isinstance(scheduler, DDPMScheduler | DDIMScheduler):
        raise DagError(f"unsupported scheduler {type(scheduler).__name__}; use make_scheduler")
    if scheduler.num_inference_steps is None:
        raise DagError("scheduler has no timesteps; call set_timesteps (make_scheduler does)")
    if eta != 0.0 and not isinstance(scheduler, DDIMScheduler):
        raise DagError(f"eta={eta} only applies to the DDIM sampler")
    if guidance is not None:
        train_steps = int(scheduler.config.num_train_timesteps)
        if guidance.num_train_timesteps != train_steps:
            raise DagError(
                f"guidance assumes T={guidance.num_train_timesteps}, scheduler has T={train_steps}"
            )
        heads = heads if heads is not None else guidance.heads
    elif heads is not None:
        heads.check_compatible(unet)
        heads.eval()

    device, dtype = unet.device, unet.dtype
    generators = per_sample_generators(seeds, device)
    batch = len(generators)
    size = unet.config.sample_size
    shape = (batch, unet.config.in_channels, size, size)
    x = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
    x = x * scheduler.init_noise_sigma
    step_kwargs: dict[str, Any] = {"generator": generators}
    if isinstance(scheduler, DDIMScheduler):
        step_kwargs["eta"] = eta

    timesteps = scheduler.timesteps
    if progress:
        timesteps = tqdm(timesteps, desc="sampling")
    log: list[dict[str, list[float]]] = []
    for t in timesteps:
        t_batch = t.to(device).long().expand(batch)
        grad, mode = None, "mean"
        if guidance is not None:
            step = guidance(x, t_batch, generators)
            eps, grad, mode = step.eps, step.grad, guidance.config.scale_mode
            log.append({k: v.detach().cpu().tolist() for k, v in step.losses.items()})
        else:
            with torch.no_grad():
                eps = unet(x, t_batch).sample
        with torch.no_grad():
            x = guided_step(scheduler, eps, t, x, grad, mode, **step_kwargs)
    images = x.clamp(-1.0, 1.0)
    if heads is None:
        return SampleResult(images=images, losses=log)
    depth, uncertainty = final_label(unet, heads, images)
    return SampleResult(images=images, depth=depth, losses=log, uncertainty=uncertainty)
