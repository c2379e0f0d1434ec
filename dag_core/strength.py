"""Guidance strength semantics: what a scale w means, and how the guidance gradient moves x_t.

The paper's guided update (DAG, "Depth guided sampling") is

    x_{t−1} ~ N(μ_θ(x_t) − w_dc ∇L_dc − w_dp ∇L_dp, Σ_θ),

and the paper uses ∇L "as an external classifier's gradient", i.e. with guided-diffusion's
classifier-guidance convention (Dhariwal & Nichol 2021, Alg. 1 and 2), where the classifier's
log-likelihood gradient ∇ log p(y | x_t) is multiplied by the step's variance Σ_θ (ancestral
sampling) or folded into ε (DDIM). With g = ∇_{x_t} Σ_b (w_dc L_dc + w_dp L_dp) (so that
∇ log p = −g), the modes are:

``paper`` — losses are squared L2 norms summed over pixels, as written (‖·‖²₂), and
    * DDPM: μ' = μ_θ(x_t) − Σ_t g, with Σ_t the step's posterior variance (guided-diffusion
      ``condition_mean``: ``mean + variance * gradient``);
    * DDIM: ε' = ε_θ(x_t) + √(1 − ᾱ_t) g, then the usual DDIM update (guided-diffusion
      ``condition_score``: ``eps − sqrt(1 − ᾱ_t) * gradient``).
    w = 40 here is the paper's w = 40, at any image, head and prior resolution.

``mean`` — losses are per-pixel MEANS and x_{t−1} = step(ε_θ).prev_sample − g, without Σ_θ.
    A scale then means the same thing at every head/prior resolution, but is not the paper's:
    with R² head pixels the mean divides the gradient by R² (1,024× at 32², 65,536× at 256²) and
    the missing Σ_t (≈ 1e-4 … 2e-2 for the linear β schedule) changes it again.

Both modes reduce to the unguided sampler bit for bit when g is None (w = 0 or outside the window).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from dag_core.configs.guidance import SCALE_MODES
from dag_core.errors import DagError


def check_scale_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`SCALE_MODES`, else a one-line DagError."""
    if mode not in SCALE_MODES:
        raise DagError(f"guidance scale_mode must be one of {', '.join(SCALE_MODES)}, got {mode!r}")
    return mode


def loss_reduction(mode: str) -> str:
    """How L_dc and L_dp reduce over pixels: ``sum`` (paper: ‖·‖²₂) or ``mean``."""
    return "sum" if check_scale_mode(mode) == "paper" else "mean"


def _alpha_bar(scheduler: SchedulerMixin, t: int) -> torch.Tensor:
    if t < 0:
        return torch.tensor(1.0)
    return scheduler.alphas_cumprod[t].to(torch.float64)


def ddpm_variance(scheduler: DDPMScheduler, t: int) -> float:
    """Σ_t of the DDPM step from t to the scheduler's previous timestep (strided schedules too).

    ``fixed_small``: β̃ = (1 − ᾱ_prev) / (1 − ᾱ_t) · β_t (Ho et al. Eq. 7, the variance the
    diffusers step adds); ``fixed_large``: β_t; with β_t = 1 − ᾱ_t / ᾱ_prev for a strided step.
    """
    kind = scheduler.config.variance_type
    t = int(t)
    prev = int(scheduler.previous_timestep(t))
    a_t, a_prev = _alpha_bar(scheduler, t), _alpha_bar(scheduler, prev)
    beta = 1.0 - a_t / a_prev
    if kind in ("fixed_small", "fixed_small_log"):
        return float(((1.0 - a_prev) / (1.0 - a_t) * beta).clamp(min=1e-20))
    if kind == "fixed_large":
        return float(beta)
    raise DagError(f"paper-mode guidance needs a fixed DDPM variance, scheduler has {kind!r}")


def guided_step(
    scheduler: SchedulerMixin,
    eps: torch.Tensor,
    t: int | torch.Tensor,
    x_t: torch.Tensor,
    grad: torch.Tensor | None,
    mode: str,
    **step_kwargs: Any,
) -> torch.Tensor:
    """x_{t−1} from ε_θ(x_t) and the guidance gradient ``grad`` = g, under ``mode``.

    ``step_kwargs`` go to ``scheduler.step`` (generators, DDIM η). ``grad`` None = unguided.
    """
    check_scale_mode(mode)
    if grad is None:
        return scheduler.step(eps, t, x_t, **step_kwargs).prev_sample
    if mode == "mean":
        return scheduler.step(eps, t, x_t, **step_kwargs).prev_sample - grad
    if isinstance(scheduler, DDIMScheduler):
        a_t = _alpha_bar(scheduler, int(t))
        eps = eps + float((1.0 - a_t).sqrt()) * grad
        return scheduler.step(eps, t, x_t, **step_kwargs).prev_sample
    if isinstance(scheduler, DDPMScheduler):
        prev = scheduler.step(eps, t, x_t, **step_kwargs).prev_sample
        return prev - ddpm_variance(scheduler, int(t)) * grad
    raise DagError(f"paper-mode guidance supports DDPM and DDIM, not {type(scheduler).__name__}")
