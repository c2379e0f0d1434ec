"""Guidance strength (``scale_mode``): each mode's update checked by hand on a tiny U-Net."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from dag_core.errors import DagError
from dag_core.guidance import DepthGuidance, GuidanceConfig, dcg_loss, dpg_loss
from dag_core.heads import DepthHeads
from dag_core.prior import DepthPrior
from dag_core.sampling import make_scheduler, sample
from dag_core.strength import ddpm_variance, guided_step, loss_reduction
from dag_core.unet_configs import CHURCH_256_SCHEDULER, tiny_unet
from tests.tiny_models import tiny_heads, tiny_prior

HEAD_RES, PRIOR_RES = 8, 16


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return tiny_unet().eval()


@pytest.fixture(scope="module")
def heads(unet: nn.Module) -> DepthHeads:
    return tiny_heads(unet, resolution=HEAD_RES)


@pytest.fixture(scope="module")
def prior() -> DepthPrior:
    return tiny_prior(PRIOR_RES)


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_reductions() -> None:
    assert loss_reduction("paper") == "sum" and loss_reduction("mean") == "mean"
    with pytest.raises(DagError, match=r"scale_mode.*'sums'"):
        loss_reduction("sums")
    with pytest.raises(DagError, match="scale_mode"):
        GuidanceConfig(scale_mode="classifier")
    d_s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    d_w = torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]]])
    assert dcg_loss(d_s, d_w, "sum").item() == pytest.approx(5.0)  # 1² + 2², the paper's ‖·‖²
    assert dcg_loss(d_s, d_w, "mean").item() == pytest.approx(1.25)


def test_dpg_sum_is_prior_pixels_times_mean(prior: DepthPrior) -> None:
    d = torch.rand(2, 1, HEAD_RES, HEAD_RES) * 2 - 1
    noise = torch.randn(2, 1, PRIOR_RES, PRIOR_RES, generator=torch.Generator().manual_seed(0))
    tau = torch.tensor([100, 400])
    total = dpg_loss(prior, d, tau, noise, "sum")
    mean = dpg_loss(prior, d, tau, noise, "mean")
    assert torch.allclose(total, PRIOR_RES**2 * mean, rtol=1e-5)


@pytest.mark.parametrize(("w_dc", "w_dp", "pixels"), [(40.0, 0.0, HEAD_RES**2), (0.0, 40.0, 256)])
def test_paper_gradient_is_the_summed_loss_gradient(unet, heads, prior, w_dc, w_dp, pixels) -> None:
    """Summing over R² pixels multiplies ∇L by R² (head pixels for DCG, prior pixels for DPG)."""
    x, t = _x(), torch.tensor(300)
    grads = {}
    for mode in ("mean", "paper"):
        config = GuidanceConfig(w_dc=w_dc, w_dp=w_dp, tau=200, scale_mode=mode)
        grads[mode] = DepthGuidance(unet, heads, prior, config)(x, t, _gens([1, 2])).grad
    assert torch.allclose(grads["paper"], pixels * grads["mean"], rtol=1e-4, atol=1e-10)


def _hand_beta_tilde(t: int, prev: int) -> float:
    acp = DDPMScheduler(**CHURCH_256_SCHEDULER).alphas_cumprod.double()
    a_t, a_prev = acp[t].item(), (acp[prev].item() if prev >= 0 else 1.0)
    return (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)


@pytest.mark.parametrize(("steps", "t", "prev"), [(1000, 500, 499), (10, 900, 800), (10, 0, -1)])
def test_ddpm_variance_hand_computed(steps: int, t: int, prev: int) -> None:
    scheduler = make_scheduler(CHURCH_256_SCHEDULER, "ddpm", steps)
    expected = max(_hand_beta_tilde(t, prev), 1e-20)
    assert ddpm_variance(scheduler, t) == pytest.approx(expected, rel=1e-6)
    large = DDPMScheduler(**{**CHURCH_256_SCHEDULER, "variance_type": "fixed_large"})
    large.set_timesteps(steps)
    assert ddpm_variance(large, t) == pytest.approx(1 - _acp(t) / _acp(prev), rel=1e-6)
    learned = DDPMScheduler(**{**CHURCH_256_SCHEDULER, "variance_type": "learned"})
    with pytest.raises(DagError, match="fixed DDPM variance"):
        ddpm_variance(learned, t)


def _acp(t: int) -> float:
    acp = DDPMScheduler(**CHURCH_256_SCHEDULER).alphas_cumprod.double()
    return acp[t].item() if t >= 0 else 1.0


def _eps_grad(shape=(2, 3, 32, 32)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return (
        torch.randn(shape, generator=g),
        torch.randn(shape, generator=g),
        torch.randn(shape, generator=g),
    )


def test_ddpm_paper_mode_shifts_the_mean_by_variance_times_grad() -> None:
    """guided-diffusion condition_mean: μ' = μ − Σ_t g, the same noise added after the mean."""
    scheduler = make_scheduler(CHURCH_256_SCHEDULER, "ddpm", 10)
    x, eps, grad = _eps_grad()
    t = int(scheduler.timesteps[1])  # 800 → 700
    plain = guided_step(scheduler, eps, t, x, None, "paper", generator=_gens([0, 1]))
    paper = guided_step(scheduler, eps, t, x, grad, "paper", generator=_gens([0, 1]))
    mean = guided_step(scheduler, eps, t, x, grad, "mean", generator=_gens([0, 1]))
    assert torch.allclose(paper, plain - _hand_beta_tilde(t, t - 100) * grad, atol=1e-6)
    assert torch.allclose(mean, plain - grad, atol=1e-6)


def test_ddim_paper_mode_corrects_eps_by_hand() -> None:
    """guided-diffusion condition_score: ε' = ε + √(1−ᾱ_t) g, then the DDIM update (η = 0)."""
    config = {**CHURCH_256_SCHEDULER, "clip_sample": False}
    scheduler = make_scheduler(config, "ddim", 10)
    x, eps, grad = _eps_grad()
    t = int(scheduler.timesteps[2])
    prev = t - 100
    got = guided_step(scheduler, eps, t, x, grad, "paper", eta=0.0)
    a_t, a_prev = _acp(t), _acp(prev)
    eps2 = eps + math.sqrt(1 - a_t) * grad
    x0 = (x.double() - math.sqrt(1 - a_t) * eps2.double()) / math.sqrt(a_t)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps2.double()
    assert torch.allclose(got.double(), expected, atol=1e-5)
    mean = guided_step(scheduler, eps, t, x, grad, "mean", eta=0.0)
    plain = guided_step(scheduler, eps, t, x, None, "mean", eta=0.0)
    assert torch.allclose(mean, plain - grad, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_paper_mode_sampling_moves_samples_and_zero_scale_is_unguided(
    unet, heads, prior, sampler: str
) -> None:
    seeds = [11, 12]
    runs = {}
    for name, w in (("off", 0.0), ("paper", 40.0)):
        config = GuidanceConfig(w_dc=w, w_dp=w, scale_mode="paper")
        guidance = DepthGuidance(unet, heads, prior, config) if w else None
        scheduler = make_scheduler(CHURCH_256_SCHEDULER, sampler, 3)
        runs[name] = sample(unet, scheduler, seeds, guidance=guidance, heads=heads).images
    plain = sample(unet, make_scheduler(CHURCH_256_SCHEDULER, sampler, 3), seeds).images
    assert torch.equal(runs["off"], plain)
    assert not torch.allclose(runs["paper"], plain)


def test_unsupported_scheduler_in_paper_mode() -> None:
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(
        **{
            k: v
            for k, v in CHURCH_256_SCHEDULER.items()
            if k in {"beta_start", "beta_end", "beta_schedule", "num_train_timesteps"}
        }
    )
    scheduler.set_timesteps(4)
    x, eps, grad = _eps_grad()
    with pytest.raises(DagError, match="DDPM and DDIM"):
        guided_step(scheduler, eps, scheduler.timesteps[0], x, grad, "paper")
    assert isinstance(make_scheduler(CHURCH_256_SCHEDULER, "ddim", 2), DDIMScheduler)
