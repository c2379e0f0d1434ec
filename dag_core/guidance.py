"""Depth guidance (DAG paper, "Depth guided sampling"): DCG, DPG and the guided update.

At every guided step one U-Net forward on x_t gives both ε_θ(x_t, t) and the intermediate features
f_t; the depth heads turn the features into two estimates of the scene's depth, the strong head's
d^S_t and the weak head's d^W_t (normalised, :mod:`dag_core.depthnorm`). Two losses read them:

* depth consistency guidance (DCG):  L_dc = ‖sg(d^S_t) − d^W_t‖²  — disagreement between the
  heads marks features the weak head cannot explain; sg(·) is stop-gradient;
* depth prior guidance (DPG):  L_dp = ‖η − ε_φ(√ᾱ_τ d^S_t + √(1−ᾱ_τ) η, τ)‖²  — the depth-domain
  diffusion prior ε_φ (:mod:`dag_core.prior`) scores how plausible d^S_t is as a depth map.

The paper's update is

    x_{t−1} ~ N(μ_θ(x_t) − w_dc ∇_{x_t} L_dc − w_dp ∇_{x_t} L_dp, Σ_θ).

:class:`DepthGuidance` returns the guidance gradient g = ∇_{x_t} Σ_b (w_dc L_dc + w_dp L_dp) with ε;
how g moves the sample — and whether the losses are summed over pixels as the paper's ‖·‖²₂ or
averaged — is the ``scale_mode`` (:mod:`dag_core.strength`): ``paper`` treats g as an external
classifier's gradient (guided-diffusion: DDPM mean − Σ_t g, DDIM ε + √(1−ᾱ_t) g, summed losses),
``mean`` subtracts g from the scheduler's output (per-pixel mean losses, no Σ_t). The sampler
applies it (:func:`dag_core.strength.guided_step`), so guidance stays sampler-agnostic.

The standard remedies for a gradient that satisfies the heads rather than the geometry shape g
before the mode applies it (all off by default): per-term normalisation (``grad_norm``: g =
Σ_k w_k ∇L_k / RMS(∇L_k)), a Gaussian low-pass (``grad_blur``), score distillation for DPG
(``dpg_gradient: sds``, :func:`dpg_loss`), per-sample L2 clipping (``grad_clip``) and a window
on t/T (``window``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from dag_core.configs.guidance import DPG_GRADIENTS, GuidanceConfig
from dag_core.errors import DagError
from dag_core.features import FeatureExtractor
from dag_core.heads import DepthHeads
from dag_core.prior import DepthPrior
from dag_core.strength import loss_reduction


def _reduce(per_pixel: torch.Tensor, reduction: str) -> torch.Tensor:
    flat = per_pixel.flatten(1)
    if reduction == "mean":
        return flat.mean(dim=1)
    if reduction == "sum":
        return flat.sum(dim=1)
    raise DagError(f"loss reduction must be 'mean' or 'sum', got {reduction!r}")


def dcg_loss(d_strong: torch.Tensor, d_weak: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Depth consistency loss L_dc = ‖sg(d^S_t) − d^W_t‖², per sample → (B,).

    ``reduction``: ``sum`` over pixels (the paper's squared L2 norm) or ``mean`` over pixels.
    The strong estimate is detached (stop-gradient): only the weak head's path is pushed towards
    the strong one, so the gradient w.r.t. x_t flows through d^W_t alone.
    """
    if d_strong.shape != d_weak.shape:
        raise DagError(
            f"strong and weak depth shapes differ: {tuple(d_strong.shape)} vs {tuple(d_weak.shape)}"
        )
    return _reduce((d_strong.detach() - d_weak).pow(2), reduction)


def dpg_loss(
    prior: DepthPrior,
    d_strong: torch.Tensor,
    tau: torch.Tensor,
    noise: torch.Tensor,
    reduction: str = "mean",
    resize: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    gradient: str = "full",
) -> torch.Tensor:
    """Depth prior loss L_dp = ‖η − ε_φ(√ᾱ_τ d^S_t + √(1−ᾱ_τ) η, τ)‖², per sample → (B,).

    d^S_t (B,1,R,R) is resized (bilinear, antialiased) to the prior's resolution r and noised by
    ``prior.scheduler.add_noise`` with ``noise`` η (B,1,r,r) at the per-sample level ``tau`` (B,).
    The prior is frozen; the gradient flows through d^S_t. ``reduction``: ``sum`` or ``mean``
    over the prior's r² pixels. ``resize(d, r)`` replaces that resize (e.g. its deterministic
    matrix form, :func:`dag_core.resize.make_resize`).

    ``gradient``: ``full`` differentiates L_dp as written, through ε_φ's Jacobian; ``sds`` drops
    that Jacobian as score distillation does (DreamFusion, Poole et al. 2022, Eq. 3):
    ∇_d L_dp ≈ 2 √ᾱ_τ (ε_φ − η), with the same loss value.
    """
    r = prior.resolution
    b = d_strong.shape[0]
    if d_strong.ndim != 4 or d_strong.shape[1] != 1:
        raise DagError(f"strong depth must be (B,1,R,R), got {tuple(d_strong.shape)}")
    if tuple(noise.shape) != (b, 1, r, r):
        raise DagError(f"prior noise must be {(b, 1, r, r)}, got {tuple(noise.shape)}")
    if tuple(tau.shape) != (b,):
        raise DagError(f"prior timesteps tau must be ({b},), got {tuple(tau.shape)}")
    if d_strong.shape[-2:] != (r, r):
        if resize is not None:
            d_strong = resize(d_strong, r)
        else:
            d_strong = F.interpolate(
                d_strong, size=(r, r), mode="bilinear", align_corners=False, antialias=True
            )
    tau = tau.to(device=d_strong.device, dtype=torch.long)
    if gradient not in DPG_GRADIENTS:
        raise DagError(f"dpg gradient must be one of {', '.join(DPG_GRADIENTS)}, got {gradient!r}")
    if gradient == "full":
        noisy = prior.scheduler.add_noise(d_strong, noise.to(d_strong), tau)
        pred = prior.unet(noisy, tau).sample
        return _reduce((noise.to(pred) - pred).pow(2), reduction)
    with torch.no_grad():
        noisy = prior.scheduler.add_noise(d_strong.detach(), noise.to(d_strong), tau)
        pred = prior.unet(noisy, tau).sample
        residual = pred - noise.to(pred)
        acp = prior.scheduler.alphas_cumprod.to(device=tau.device, dtype=torch.float32)
        alpha = acp[tau].sqrt().view(-1, 1, 1, 1).to(residual.dtype)
    surrogate = _reduce(2.0 * alpha * residual * d_strong, reduction)
    return _reduce(residual.pow(2), reduction) + surrogate - surrogate.detach()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian low-pass of (B,C,H,W) ``x`` with std ``sigma`` pixels (reflect pad),
    computed in float32 outside any autocast region and returned in ``x``'s dtype."""
    with torch.autocast(x.device.type, enabled=False):
        return _gaussian_blur(x.float(), sigma).to(x.dtype)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass
class GuidedStep:
    """One guided denoiser evaluation: detached ε, the guidance gradient
    g = ∇_{x_t} Σ_b (w_dc L_dc + w_dp L_dp) (None when inactive; applied by
    :func:`dag_core.strength.guided_step`), per-sample losses (each (B,)) and the strong head's
    normalised depth d^S_t (detached)."""

    eps: torch.Tensor
    grad: torch.Tensor | None
    losses: dict[str, torch.Tensor]
    depth_strong: torch.Tensor


def _timesteps(t: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if tuple(t.shape) != (batch,):
        raise DagError(f"timestep must be a scalar or ({batch},), got shape {tuple(t.shape)}")
    if not bool((t == t[0]).all()):
        raise DagError(f"guided sampling needs one timestep per step, got {t.tolist()}")
    return t.long()


class DepthGuidance:
    """The paper's depth-guided denoiser: ε_θ plus the DCG/DPG gradient for one sampling step.

    The heads are put in eval mode (they are frozen predictors here). The window is read against
    the base model's T, taken from ``heads.num_train_timesteps``.
    """

    def __init__(
        self,
        unet: nn.Module,
        heads: DepthHeads,
        prior: DepthPrior | None,
        config: GuidanceConfig,
    ) -> None:
        if config.w_dp > 0 and prior is None:
            raise DagError(f"depth prior guidance w_dp={config.w_dp} needs a depth prior")
        heads.check_compatible(unet)
        if prior is not None:
            if prior.norm != heads.norm:
                raise DagError(
                    f"depth prior normalisation {prior.norm} differs from the heads' {heads.norm}"
                )
            config.check_tau(prior.num_train_timesteps)
        self.unet = unet
        self.heads = heads.eval()  # frozen predictors: BatchNorm must not mix the samples
        self.prior = prior
        self.config = config
        #: T of the base model (the heads record the schedule they were trained under)
        self.num_train_timesteps = int(heads.num_train_timesteps)
        #: resize of d^S_t to the prior's resolution (None: antialiased ``F.interpolate``)
        self.prior_resize: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    def eval_heads(
        self, features: list[torch.Tensor], t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(d^S_t, d^W_t) from the decoder features (override point for runtime levers)."""
        return self.heads(features, t)

    def _draw_tau(
        self, batch: int, generator: list[torch.Generator] | None, device: torch.device
    ) -> torch.Tensor:
        cfg = self.config
        if isinstance(cfg.tau, int):
            return torch.full((batch,), cfg.tau, dtype=torch.long, device=device)
        if generator is None:
            return torch.randint(cfg.tau_min, cfg.tau_max + 1, (batch,), device=device)
        draws = [
            torch.randint(cfg.tau_min, cfg.tau_max + 1, (1,), generator=g, device=g.device)
            for g in generator
        ]
        return torch.cat(draws).to(device)

    def __call__(
        self,
        x_t: torch.Tensor,
        t: int | torch.Tensor,
        generator: list[torch.Generator] | None = None,
    ) -> GuidedStep:
        """Evaluate ε_θ(x_t, t) and, when active, g = ∇_{x_t} Σ_b (w_dc L_dc + w_dp L_dp).

        ``generator`` (one per sample) draws τ and η for DPG, so results do not depend on batching.
        """
        batch = x_t.shape[0]
        if generator is not None and len(generator) != batch:
            raise DagError(f"need one generator per sample ({batch}), got {len(generator)}")
        t_batch = _timesteps(t, batch, x_t.device)
        with FeatureExtractor(self.unet, self.heads.blocks) as extractor:
            if not self.config.active(t_batch[0], self.num_train_timesteps):
                with torch.no_grad():
                    eps, features = extractor(x_t, t_batch)
                    d_strong, _ = self.eval_heads(features, t_batch)
                return GuidedStep(eps=eps, grad=None, losses={}, depth_strong=d_strong)
            with torch.enable_grad():
                x = x_t.detach().requires_grad_(True)
                eps, features = extractor(x, t_batch)
                d_strong, d_weak = self.eval_heads(features, t_batch)
                losses, terms = self._losses(d_strong, d_weak, generator)
                total = sum(w * loss for w, loss in terms)
                assert isinstance(total, torch.Tensor)  # active => at least one term
                if self.config.grad_norm:  # each term's gradient separately (same forward)
                    parts = [
                        (w, torch.autograd.grad(loss.sum(), x, retain_graph=k < len(terms) - 1)[0])
                        for k, (w, loss) in enumerate(terms)
                    ]
                else:
                    parts = [(1.0, torch.autograd.grad(total.sum(), x)[0])]
        return GuidedStep(
            eps=eps.detach(),
            grad=self._postprocess(parts, total, losses),
            losses=losses,
            depth_strong=d_strong.detach(),
        )

    def _losses(
        self,
        d_strong: torch.Tensor,
        d_weak: torch.Tensor,
        generator: list[torch.Generator] | None,
    ) -> tuple[dict[str, torch.Tensor], list[tuple[float, torch.Tensor]]]:
        """Detached per-sample losses for logging, and the active terms (w, L) with their graph."""
        cfg = self.config
        reduction = loss_reduction(cfg.scale_mode)
        batch = d_strong.shape[0]
        terms: list[tuple[float, torch.Tensor]] = []
        losses: dict[str, torch.Tensor] = {}
        if cfg.w_dc > 0:
            l_dc = dcg_loss(d_strong, d_weak, reduction)
            if reduction == "sum" and d_strong.shape[-1] != self.heads.resolution:
                # heads evaluated at another size (a runtime lever): keep Σ over the R² pixels
                l_dc = l_dc * (self.heads.resolution / d_strong.shape[-1]) ** 2
            terms.append((cfg.w_dc, l_dc))
            losses["dc"] = l_dc.detach()
        if cfg.w_dp > 0:
            assert self.prior is not None  # enforced in __init__
            r = self.prior.resolution
            tau = self._draw_tau(batch, generator, d_strong.device)
            noise = randn_tensor(
                (batch, 1, r, r), generator=generator, device=d_strong.device, dtype=d_strong.dtype
            )
            l_dp = dpg_loss(
                self.prior,
                d_strong,
                tau,
                noise,
                reduction,
                resize=self.prior_resize,
                gradient=cfg.dpg_gradient,
            )
            terms.append((cfg.w_dp, l_dp))
            losses["dp"] = l_dp.detach()
            losses["tau"] = tau.detach().to(d_strong.dtype)
        return losses, terms

    def _postprocess(
        self,
        parts: list[tuple[float, torch.Tensor]],
        total: torch.Tensor,
        losses: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """g from the gradient parts (w_k, ∇_k): NaN guard, low-pass, normalisation, clipping.

        Without ``grad_norm`` there is one part, (1, ∇ Σ_k w_k L_k). With it, one per term, and
        g = Σ_k w_k ∇L_k / RMS(∇L_k) per sample: w_k is then the term's per-pixel RMS step (in
        the units of x_t, before the scale mode's Σ_t or √(1 − ᾱ_t)), whatever the loss's size.
        ``grad_norm`` in the losses log is ‖Σ_k w_k ∇L_k‖ before any of this.
        """
        cfg = self.config
        raw = sum(w * g for w, g in parts)
        assert isinstance(raw, torch.Tensor)
        finite = torch.isfinite(raw.flatten(1)).all(dim=1) & torch.isfinite(total.detach())
        guard = ~finite if cfg.nan_guard else torch.zeros_like(finite)
        drop = guard.view(-1, *([1] * (raw.ndim - 1)))
        losses["total"] = total.detach()
        losses["grad_norm"] = torch.where(drop, 0.0, raw).flatten(1).norm(dim=1).detach()
        losses["nan_guarded"] = guard.to(raw.dtype)
        grad = torch.zeros_like(raw)
        for w, g in parts:
            g = torch.where(drop, 0.0, g)
            if cfg.grad_blur is not None:
                g = gaussian_blur(g, cfg.grad_blur)
            if cfg.grad_norm:
                rms = g.flatten(1).pow(2).mean(dim=1).sqrt()
                g = g / rms.clamp_min(1e-12).view_as(drop)
            grad = grad + w * g
        if cfg.grad_clip is not None:
            norm = grad.flatten(1).norm(dim=1)
            scale = (cfg.grad_clip / norm.clamp_min(1e-12)).clamp(max=1.0)
            grad = grad * scale.view_as(drop)
        return grad
