"""Depth guidance: the DCG/DPG losses on hand-computed cases, the config, and the guided step."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from dag_core import guidance as guidance_module
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.features import decoder_layers
from dag_core.guidance import (
    DepthGuidance,
    GuidanceConfig,
    dcg_loss,
    dpg_loss,
    gaussian_blur,
)
from dag_core.heads import DepthHeads, HeadConfig
from dag_core.prior import DepthPrior, PriorConfig, prior_unet
from dag_core.unet_configs import tiny_unet
from tests.numerics import assert_same_up_to_summation_order


class _IdentityPriorNet(nn.Module):
    """A stand-in ε_φ whose prediction is its noisy input, so L_dp can be computed by hand."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(sample_size=resolution)
        self.seen_t: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        self.seen_t = t
        return SimpleNamespace(sample=x)


def _identity_prior(resolution: int) -> DepthPrior:
    return DepthPrior(_IdentityPriorNet(resolution), DDPMScheduler(), DepthNorm())


# --- L_dc ----------------------------------------------------------------------------------------


def test_dcg_loss_hand_computed() -> None:
    d_s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    d_w = torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]], [[[1.0, 1.0], [1.0, 3.0]]]])
    # sample 0: (1² + 0 + 2² + 0) / 4; sample 1: (1 + 1 + 1 + 9) / 4
    assert torch.allclose(dcg_loss(d_s, d_w), torch.tensor([1.25, 3.0]))


def test_dcg_loss_stops_gradient_into_strong_head() -> None:
    d_s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)
    d_w = torch.tensor([[[[0.0, 2.0], [5.0, 4.0]]]], requires_grad=True)
    dcg_loss(d_s, d_w).sum().backward()
    assert d_s.grad is None  # sg(d^S): no gradient at all reaches the strong estimate
    assert torch.allclose(d_w.grad, 2 * (d_w - d_s).detach() / 4)


def test_dcg_loss_shape_mismatch() -> None:
    with pytest.raises(DagError, match="differ"):
        dcg_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4))


# --- L_dp ----------------------------------------------------------------------------------------


def test_dpg_loss_hand_computed() -> None:
    prior = _identity_prior(2)
    d = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]], [[[0.2, 0.2], [-1.0, 0.3]]]])
    eta = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]]], [[[0.0, 1.0], [-2.0, 0.1]]]])
    tau = torch.tensor([10, 700])
    loss = dpg_loss(prior, d, tau, eta)
    acp = DDPMScheduler().alphas_cumprod
    for i in range(2):
        a = acp[tau[i]].item()
        noisy = math.sqrt(a) * d[i] + math.sqrt(1 - a) * eta[i]
        assert loss[i].item() == pytest.approx(((eta[i] - noisy) ** 2).mean().item(), rel=1e-5)
    assert torch.equal(prior.unet.seen_t, tau)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dpg_sds_gradient_drops_the_prior_jacobian(reduction: str) -> None:
    # ε_φ(x) = 2x: the full gradient carries the Jacobian (2 I), the SDS one does not
    prior = _identity_prior(2)
    prior.unet.forward = lambda x, t: SimpleNamespace(sample=2 * x)  # type: ignore[method-assign]
    d = torch.tensor([[[[0.5, -0.5], [1.0, 0.0]]], [[[0.2, 0.2], [-1.0, 0.3]]]])
    eta = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]]], [[[0.0, 1.0], [-2.0, 0.1]]]])
    tau = torch.tensor([10, 700])
    acp = DDPMScheduler().alphas_cumprod[tau].view(-1, 1, 1, 1)
    a = acp.sqrt()
    pred = 2 * (a * d + (1 - acp).sqrt() * eta)
    n = 1 if reduction == "sum" else 4
    grads = {}
    for mode in ("full", "sds"):
        x = d.clone().requires_grad_(True)
        loss = dpg_loss(prior, x, tau, eta, reduction, gradient=mode)
        assert torch.allclose(loss, (eta - pred).pow(2).flatten(1).sum(1) / n)  # same value
        loss.sum().backward()
        grads[mode] = x.grad
    assert torch.allclose(grads["full"], -2 * (eta - pred) * 2 * a / n, atol=1e-6)
    assert torch.allclose(grads["sds"], 2 * a * (pred - eta) / n, atol=1e-6)
    with pytest.raises(DagError, match="dpg gradient"):
        dpg_loss(prior, d, tau, eta, gradient="jacobian-free")


def test_dpg_loss_zero_prior_is_noise_energy() -> None:
    config = PriorConfig(resolution=8, channels=(8, 16))
    unet = prior_unet(config).requires_grad_(False)
    nn.init.zeros_(unet.conv_out.weight)
    nn.init.zeros_(unet.conv_out.bias)
    prior = DepthPrior(unet, DDPMScheduler(), DepthNorm())
    eta = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    loss = dpg_loss(prior, torch.zeros(2, 1, 8, 8), torch.tensor([3, 400]), eta)
    assert torch.allclose(loss, eta.pow(2).flatten(1).mean(1))


def test_dpg_loss_resizes_with_antialias_and_passes_gradient() -> None:
    prior = _identity_prior(2)
    d = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4).requires_grad_(True)
    eta = torch.randn(1, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    tau = torch.tensor([250])
    loss = dpg_loss(prior, d, tau, eta)
    small = F.interpolate(d.detach(), size=(2, 2), mode="bilinear", antialias=True)
    plain = F.interpolate(d.detach(), size=(2, 2), mode="bilinear", antialias=False)
    assert not torch.allclose(small, plain)  # the case distinguishes antialiasing
    expected = dpg_loss(prior, small, tau, eta)
    assert torch.allclose(loss.detach(), expected)
    loss.sum().backward()
    assert d.grad is not None and d.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("d", "tau", "noise", "match"),
    [
        (torch.zeros(1, 2, 2, 2), torch.tensor([1]), torch.zeros(1, 1, 2, 2), "strong depth"),
        (torch.zeros(1, 1, 2, 2), torch.tensor([1]), torch.zeros(1, 1, 4, 4), "noise"),
        (torch.zeros(1, 1, 2, 2), torch.tensor([1, 2]), torch.zeros(1, 1, 2, 2), "tau"),
    ],
)
def test_dpg_loss_bad_shapes(d, tau, noise, match: str) -> None:
    with pytest.raises(DagError, match=match):
        dpg_loss(_identity_prior(2), d, tau, noise)


# --- GuidanceConfig ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"w_dc": -1.0},
        {"w_dp": float("nan")},
        {"w_dc": float("inf")},
        {"tau": -3},
        {"tau": "sometimes"},
        {"tau_min": 600, "tau_max": 500},
        {"tau_min": -1},
        {"window": (0.6, 0.4)},
        {"window": (-0.1, 0.5)},
        {"window": (0.0, 1.5)},
        {"window": (0.0, float("nan"))},
        {"grad_clip": 0.0},
        {"grad_clip": float("inf")},
        {"grad_norm": 1},
        {"dpg_gradient": "none"},
        {"grad_blur": 0.0},
        {"grad_blur": float("nan")},
    ],
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(DagError):
        GuidanceConfig(**kwargs)


def test_active_window_and_enabled() -> None:
    late = GuidanceConfig(window=(0.0, 0.5))
    assert late.enabled
    assert late.active(400, 1000) and late.active(torch.tensor(500), 1000)
    assert not late.active(600, 1000)
    off = GuidanceConfig(w_dc=0.0, w_dp=0.0)
    assert not off.enabled and not off.active(10, 1000)
    assert GuidanceConfig(w_dc=0.0, w_dp=1.0).enabled


def test_tau_range_checked_against_prior() -> None:
    GuidanceConfig(tau=999).check_tau(1000)
    with pytest.raises(DagError, match="1000"):
        GuidanceConfig(tau=1000).check_tau(1000)
    with pytest.raises(DagError, match="500"):
        GuidanceConfig(tau_max=500).check_tau(100)


# --- DepthGuidance on the real FeatureExtractor + DepthHeads -------------------------------------

#: the setting these tests were written for: mean mode, w = 40, guidance at every step (the
#: library's defaults are now params.yaml's: paper mode, w_dc 0.3 / w_dp 0.5, window [0, 0.6])
MEAN_40 = {"w_dc": 40.0, "w_dp": 40.0, "window": (0.0, 1.0), "scale_mode": "mean"}


def _config(**kwargs: object) -> GuidanceConfig:
    return GuidanceConfig(**{**MEAN_40, **kwargs})  # type: ignore[arg-type]


T = 1000


def _heads(unet: nn.Module, norm: DepthNorm | None = None, seed: int = 0) -> DepthHeads:
    config = HeadConfig(hidden=(16,), time_dim=8)
    layers = decoder_layers(unet)
    channels = {k: layers[k].channels for k in (*config.strong_blocks, *config.weak_blocks)}
    torch.manual_seed(seed)
    return DepthHeads(config, norm or DepthNorm(), channels, resolution=8)


def _prior(num_train_timesteps: int = T, norm: DepthNorm | None = None) -> DepthPrior:
    unet = prior_unet(PriorConfig(resolution=16, channels=(8, 16))).eval().requires_grad_(False)
    scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps)
    return DepthPrior(unet, scheduler, norm or DepthNorm())


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return tiny_unet().eval()


@pytest.fixture(scope="module")
def heads(unet: nn.Module) -> DepthHeads:
    return _heads(unet)


@pytest.fixture(scope="module")
def prior() -> DepthPrior:
    return _prior()


def _x(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_gradient_reaches_x_t(unet, heads, prior) -> None:
    guidance = DepthGuidance(unet, heads, prior, _config())
    x = _x()
    step = guidance(x, torch.tensor(500), _gens([1, 2]))
    assert step.grad is not None and step.grad.shape == x.shape
    assert torch.isfinite(step.grad).all()
    assert (step.grad.flatten(1).norm(dim=1) > 0).all()
    assert not step.eps.requires_grad and step.eps.grad_fn is None
    assert not step.depth_strong.requires_grad and step.depth_strong.shape == (2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(step.eps, unet(x, torch.tensor([500, 500])).sample, atol=1e-6)
    assert set(step.losses) == {"dc", "dp", "tau", "total", "grad_norm", "nan_guarded"}
    assert all(v.shape == (2,) for v in step.losses.values())
    assert torch.allclose(step.losses["total"], 40 * step.losses["dc"] + 40 * step.losses["dp"])
    assert ((step.losses["tau"] >= 50) & (step.losses["tau"] <= 500)).all()
    assert torch.equal(step.losses["nan_guarded"], torch.zeros(2))
    assert not x.requires_grad  # the caller's tensor is untouched


def test_grad_is_linear_in_the_scale(unet, heads) -> None:
    x, t = _x(), torch.tensor(300)
    one = DepthGuidance(unet, heads, None, _config(w_dc=10.0, w_dp=0.0))(x, t)
    two = DepthGuidance(unet, heads, None, _config(w_dc=20.0, w_dp=0.0))(x, t)
    assert set(one.losses) == {"dc", "total", "grad_norm", "nan_guarded"}
    assert torch.allclose(two.grad, 2 * one.grad, rtol=1e-4, atol=1e-9)


def test_grad_is_per_sample(unet, heads, prior) -> None:
    guidance = DepthGuidance(unet, heads, prior, _config(tau="random"))
    x, t = _x(3), torch.tensor(700)
    both = guidance(x, t, _gens([4, 5, 6]))
    alone = guidance(x[1:2], t, _gens([5]))
    # batch 3 vs 1: the same math, only the kernels' summation order may differ
    assert_same_up_to_summation_order(both.grad[1:2], alone.grad, "grad", distinct=False)
    assert not torch.allclose(both.grad[0:1], alone.grad, rtol=1e-2, atol=1e-3)  # not sample 0's
    assert torch.equal(both.losses["tau"][1:2], alone.losses["tau"])


def test_fixed_tau(unet, heads, prior) -> None:
    step = DepthGuidance(unet, heads, prior, _config(tau=123))(_x(), 10)
    assert torch.equal(step.losses["tau"], torch.tensor([123.0, 123.0]))


def test_window_and_disabled(unet, heads, prior) -> None:
    x = _x()
    late = DepthGuidance(unet, heads, prior, _config(window=(0.0, 0.5)))
    outside = late(x, torch.tensor(700), _gens([1, 2]))
    assert outside.grad is None and outside.losses == {}
    assert outside.eps.grad_fn is None
    with torch.no_grad():
        assert torch.equal(outside.eps, unet(x, torch.tensor([700, 700])).sample)
    assert late(x, torch.tensor(300), _gens([1, 2])).grad is not None
    off = DepthGuidance(unet, heads, None, _config(w_dc=0.0, w_dp=0.0))
    step = off(x, torch.tensor(300))
    assert step.grad is None and step.depth_strong.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("nan_guard", [True, False])
def test_nan_guard(unet, heads, monkeypatch: pytest.MonkeyPatch, nan_guard: bool) -> None:
    real = guidance_module.dcg_loss

    def poisoned(d_s: torch.Tensor, d_w: torch.Tensor, *rest: str) -> torch.Tensor:
        return real(d_s, d_w, *rest) * torch.tensor([float("nan"), 1.0])

    monkeypatch.setattr(guidance_module, "dcg_loss", poisoned)
    config = _config(w_dc=1.0, w_dp=0.0, nan_guard=nan_guard)
    step = DepthGuidance(unet, heads, None, config)(_x(), 200)
    if nan_guard:
        assert torch.equal(step.grad[0], torch.zeros_like(step.grad[0]))
        assert torch.equal(step.losses["nan_guarded"], torch.tensor([1.0, 0.0]))
    else:
        assert torch.isnan(step.grad[0]).all()
        assert torch.equal(step.losses["nan_guarded"], torch.zeros(2))
    assert torch.isfinite(step.grad[1]).all() and step.grad[1].abs().sum() > 0


def test_grad_clip(unet, heads) -> None:
    x = _x()
    free = DepthGuidance(unet, heads, None, _config(w_dp=0.0))(x, 200)
    norms = free.grad.flatten(1).norm(dim=1)
    clip = float(norms.min()) / 2
    clipped = DepthGuidance(unet, heads, None, _config(w_dp=0.0, grad_clip=clip))(x, 200)
    assert torch.allclose(clipped.grad.flatten(1).norm(dim=1), torch.full((2,), clip), rtol=1e-4)
    cos = F.cosine_similarity(clipped.grad.flatten(1), free.grad.flatten(1), dim=1)
    assert torch.allclose(cos, torch.ones(2), atol=1e-5)
    assert torch.allclose(clipped.losses["grad_norm"], norms)  # logged before clipping


def test_grad_norm_gives_each_term_rms_w(unet, heads) -> None:
    x = _x()
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    prior = _prior()
    dc = DepthGuidance(unet, heads, prior, _config(w_dp=0.0))(x, 200, gens())
    dp = DepthGuidance(unet, heads, prior, _config(w_dc=0.0))(x, 200, gens())
    one = DepthGuidance(unet, heads, prior, _config(w_dc=2.0, w_dp=0.0, grad_norm=True))
    normed = one(x, 200, gens()).grad
    rms = normed.flatten(1).pow(2).mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.full((2,), 2.0), atol=1e-5)  # w is the RMS step
    cos = F.cosine_similarity(normed.flatten(1), dc.grad.flatten(1), dim=1)
    assert torch.allclose(cos, torch.ones(2), atol=1e-5)

    def unit(g: torch.Tensor) -> torch.Tensor:
        return g / g.flatten(1).pow(2).mean(dim=1).sqrt().view(-1, 1, 1, 1)

    both = DepthGuidance(unet, heads, prior, _config(w_dc=1.0, w_dp=3.0, grad_norm=True))
    got = both(x, 200, gens())
    # the default scales are 40 each: unit(dc.grad) = unit(∇L_dc), unit(dp.grad) = unit(∇L_dp)
    assert torch.allclose(got.grad, unit(dc.grad) + 3.0 * unit(dp.grad), atol=1e-4)
    assert torch.allclose(got.losses["dc"], dc.losses["dc"]) and torch.equal(
        got.losses["tau"], dp.losses["tau"]
    )


def test_grad_norm_then_clip_and_nan_guard(unet, heads, monkeypatch: pytest.MonkeyPatch) -> None:
    real = guidance_module.dcg_loss

    def poisoned(d_s: torch.Tensor, d_w: torch.Tensor, *rest: str) -> torch.Tensor:
        return real(d_s, d_w, *rest) * torch.tensor([float("nan"), 1.0])  # sample 0 diverged

    monkeypatch.setattr(guidance_module, "dcg_loss", poisoned)
    cfg = _config(w_dc=3.0, w_dp=0.0, grad_norm=True, grad_clip=1.0)
    step = DepthGuidance(unet, heads, None, cfg)(_x(), 200)
    assert torch.equal(step.grad[0], torch.zeros_like(step.grad[0]))
    assert torch.equal(step.losses["nan_guarded"], torch.tensor([1.0, 0.0]))
    # normalised to RMS 3 (norm 3·√N), then clipped to norm 1
    assert torch.isclose(step.grad[1].norm(), torch.tensor(1.0), atol=1e-5)


def test_gaussian_blur_keeps_dtype_and_runs_in_fp32() -> None:
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gaussian_blur(x.to(torch.bfloat16), 1.0)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), gaussian_blur(x.to(torch.bfloat16).float(), 1.0), atol=1e-2)


def test_gaussian_blur_matches_hand_kernel() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    y = gaussian_blur(x, 1.0)
    k = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    k = k / k.sum()
    assert torch.allclose(y[0, 0, 1:8, 1:8], torch.outer(k, k), atol=1e-6)
    assert torch.isclose(y.sum(), torch.tensor(1.0), atol=1e-6)  # mass kept away from borders
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    smooth = gaussian_blur(noise, 1.5)
    high = (smooth[..., 1:, :] - smooth[..., :-1, :]).abs().mean()
    assert high < 0.5 * (noise[..., 1:, :] - noise[..., :-1, :]).abs().mean()


def test_grad_blur_low_passes_the_gradient(unet, heads) -> None:
    x = _x()
    free = DepthGuidance(unet, heads, None, _config(w_dp=0.0))(x, 200)
    blurred = DepthGuidance(unet, heads, None, _config(w_dp=0.0, grad_blur=1.0))(x, 200)
    assert torch.allclose(blurred.grad, gaussian_blur(free.grad, 1.0), atol=1e-6)
    assert torch.allclose(blurred.losses["grad_norm"], free.losses["grad_norm"])  # logged raw


def test_guidance_construction_errors(unet, heads) -> None:
    with pytest.raises(DagError, match="w_dp"):
        DepthGuidance(unet, heads, None, _config())
    other = tiny_unet(channels=(8, 8, 16, 16, 32, 32))
    with pytest.raises(DagError, match="channels"):
        DepthGuidance(other, heads, None, _config(w_dp=0.0))
    with pytest.raises(DagError, match="normalisation"):
        DepthGuidance(unet, heads, _prior(norm=DepthNorm(kind="linear")), _config())
    with pytest.raises(DagError, match="tau 500"):
        DepthGuidance(unet, heads, _prior(num_train_timesteps=100), _config())
    guidance = DepthGuidance(unet, heads, None, _config(w_dp=0.0))
    with pytest.raises(DagError, match="generator"):
        guidance(_x(), 10, _gens([1]))
    with pytest.raises(DagError, match="one timestep"):
        guidance(_x(), torch.tensor([10, 20]))
