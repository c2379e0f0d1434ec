"""The sampler: schedulers from the base config, per-sample seeding, and guided sampling."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from dag_core.errors import DagError
from dag_core.guidance import DepthGuidance, GuidanceConfig
from dag_core.heads import DepthHeads
from dag_core.prior import DepthPrior
from dag_core.sampling import make_scheduler, per_sample_generators, sample
from dag_core.unet_configs import CHURCH_256_SCHEDULER, tiny_unet
from tests.numerics import assert_same_up_to_summation_order
from tests.tiny_models import tiny_heads, tiny_prior

STEPS = 3


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return tiny_unet().eval()


@pytest.fixture(scope="module")
def heads(unet: nn.Module) -> DepthHeads:
    return tiny_heads(unet)


@pytest.fixture(scope="module")
def prior() -> DepthPrior:
    return tiny_prior()


#: the setting these tests were written for: mean mode, w = 40, guidance at every step (the
#: library's defaults are now params.yaml's: paper mode, w_dc 0.3 / w_dp 0.5, window [0, 0.6])
MEAN_40 = {"w_dc": 40.0, "w_dp": 40.0, "window": (0.0, 1.0), "scale_mode": "mean"}


def _guidance(unet, heads, prior, **kwargs) -> DepthGuidance:
    return DepthGuidance(unet, heads, prior, GuidanceConfig(**{**MEAN_40, **kwargs}))


# --- schedulers and generators -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), [("ddpm", DDPMScheduler), ("ddim", DDIMScheduler)])
def test_make_scheduler(name: str, cls: type) -> None:
    base = DDPMScheduler.from_config(CHURCH_256_SCHEDULER)
    for source in (base, CHURCH_256_SCHEDULER):
        scheduler = make_scheduler(source, name, 4)
        assert type(scheduler) is cls
        assert len(scheduler.timesteps) == 4
        assert torch.equal(scheduler.alphas_cumprod, base.alphas_cumprod)
        assert scheduler.config.clip_sample is True
    assert make_scheduler(base, name, 4) is not make_scheduler(base, name, 4)


@pytest.mark.parametrize(
    ("sampler", "steps", "match"),
    [("euler", 4, "euler"), ("ddpm", 0, "0"), ("ddim", 1001, "1001"), ("ddpm", 2.5, "2.5")],
)
def test_make_scheduler_errors(sampler: str, steps, match: str) -> None:
    with pytest.raises(DagError, match=match):
        make_scheduler(CHURCH_256_SCHEDULER, sampler, steps)


def test_per_sample_generators() -> None:
    a = per_sample_generators([7, 8], "cpu")
    b = per_sample_generators([7], "cpu")
    assert torch.equal(torch.randn(3, generator=a[0]), torch.randn(3, generator=b[0]))
    assert not torch.equal(torch.randn(3, generator=a[1]), torch.randn(3, generator=b[0]))
    for bad in ([], [-1], [1.5], [True]):
        with pytest.raises(DagError):
            per_sample_generators(bad, "cpu")


# --- sampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "eta"), [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_zero_scales_reproduce_unguided_bit_for_bit(unet, heads, name: str, eta: float) -> None:
    plain = sample(unet, make_scheduler(CHURCH_256_SCHEDULER, name, STEPS), [1, 2], eta=eta)
    off = _guidance(unet, heads, None, w_dc=0.0, w_dp=0.0)
    zero = sample(
        unet, make_scheduler(CHURCH_256_SCHEDULER, name, STEPS), [1, 2], guidance=off, eta=eta
    )
    assert torch.equal(plain.images, zero.images)
    assert zero.images.grad_fn is None and not zero.images.requires_grad
    assert zero.losses == [{}] * STEPS
    assert plain.depth is None and plain.losses == []
    assert zero.depth is not None


def test_guided_sampling_result(unet, heads, prior) -> None:
    scheduler = make_scheduler(CHURCH_256_SCHEDULER, "ddpm", STEPS)
    guided = sample(unet, scheduler, [1, 2], guidance=_guidance(unet, heads, prior))
    plain = sample(unet, scheduler, [1, 2], heads=heads)
    assert guided.images.shape == (2, 3, 32, 32)
    assert guided.images.min() >= -1 and guided.images.max() <= 1
    assert not torch.equal(guided.images, plain.images)
    assert guided.images.grad_fn is None
    norm = heads.norm
    for result in (guided, plain):
        assert result.depth.shape == (2, 1, 8, 8)
        assert result.depth.min() >= norm.min_depth - 1e-6
        assert result.depth.max() <= norm.max_depth + 1e-5
    assert len(guided.losses) == STEPS
    for row in guided.losses:
        assert set(row) == {"dc", "dp", "tau", "total", "grad_norm", "nan_guarded"}
        assert all(isinstance(v, list) and len(v) == 2 for v in row.values())


def test_window_limits_guided_steps(unet, heads, prior) -> None:
    scheduler = make_scheduler(CHURCH_256_SCHEDULER, "ddim", 4)  # t = 750, 500, 250, 0
    result = sample(unet, scheduler, [3], guidance=_guidance(unet, heads, prior, window=(0, 0.5)))
    assert [bool(row) for row in result.losses] == [False, True, True, True]


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_results_do_not_depend_on_batching(unet, heads, prior, name: str) -> None:
    scheduler = make_scheduler(CHURCH_256_SCHEDULER, name, STEPS)
    guidance = _guidance(unet, heads, prior, tau="random")
    eta = 0.5 if name == "ddim" else 0.0
    full = sample(unet, scheduler, [1, 2, 3], guidance=guidance, eta=eta)
    first = sample(unet, scheduler, [1], guidance=guidance, eta=eta)
    rest = sample(unet, scheduler, [2, 3], guidance=guidance, eta=eta)
    # Per-sample seeds: the same math in a batch of 3 or 1 + 2; only the kernels' float
    # summation order may differ (tests.numerics), and no sample may land on another's place.
    split = torch.cat([first.images, rest.images])
    assert_same_up_to_summation_order(full.images, split, "images")
    assert_same_up_to_summation_order(full.depth, torch.cat([first.depth, rest.depth]), "depth")
    assert full.losses[0]["tau"] == first.losses[0]["tau"] + rest.losses[0]["tau"]


def test_sampling_errors(unet, heads, prior) -> None:
    with pytest.raises(DagError, match="eta"):
        sample(unet, make_scheduler(CHURCH_256_SCHEDULER, "ddpm", STEPS), [1], eta=0.5)
    with pytest.raises(DagError, match="set_timesteps"):
        sample(unet, DDPMScheduler.from_config(CHURCH_256_SCHEDULER), [1])
    short = make_scheduler({**CHURCH_256_SCHEDULER, "num_train_timesteps": 500}, "ddpm", STEPS)
    with pytest.raises(DagError, match="T=1000"):
        sample(unet, short, [1], guidance=_guidance(unet, heads, prior))
