"""Cost of depth guidance per sampling step: unguided vs DCG+DPG guided vs a 50% window.

A guided step runs the U-Net forward with the autograd graph kept, the depth heads, the depth
prior ε_φ, and a backward pass to x_t. The usual rule of thumb puts that at ≈ 3× an unguided step
(a backward ≈ 2 forwards), but only input gradients are needed here — no weight gradients — so
the backward costs about one forward and the floor is nearer 2× when the U-Net dominates.
The modes — unguided, DCG+DPG at every step, DCG+DPG in a 50% window (t/T <= 0.5), DCG only —
are timed side by side in one run, interleaved per repeat so that load from other processes
affects them alike; medians are reported.
On the tiny U-Net the heads and the prior cost about as much as the U-Net itself, so the ratios sit
above the floor; the DCG-only mode separates the prior's share.

CPU run (2 threads) on a tiny church-layout U-Net at 32²; real-size numbers (256², the
google/ddpm-church-256 U-Net, the 128² prior) would come from a GPU.

    python bench/bench_guidance.py [--repeats 5] [--steps 10] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import diffusers
import torch
from diffusers import DDPMScheduler

from dag_core.depthnorm import DepthNorm
from dag_core.features import decoder_layers
from dag_core.guidance import DepthGuidance, GuidanceConfig
from dag_core.heads import DepthHeads, HeadConfig
from dag_core.prior import DepthPrior, PriorConfig, prior_unet
from dag_core.sampling import make_scheduler, sample
from dag_core.unet_configs import CHURCH_256_SCHEDULER, tiny_unet

RESOLUTION = 32
OUT = Path(__file__).resolve().parent / "results" / "guidance.json"


def guidance_parts(unet: torch.nn.Module) -> tuple[DepthHeads, DepthPrior]:
    """Default-config depth heads (seed 0) on ``unet``'s decoder and a default prior, random."""
    config = HeadConfig()
    layers = decoder_layers(unet)
    channels = {k: layers[k].channels for k in (*config.strong_blocks, *config.weak_blocks)}
    torch.manual_seed(0)
    heads = DepthHeads(config, DepthNorm(), channels, resolution=unet.config.sample_size).eval()
    prior_net = prior_unet(PriorConfig()).eval().requires_grad_(False)
    prior = DepthPrior(prior_net, DDPMScheduler(num_train_timesteps=1000), DepthNorm())
    return heads, prior


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    unet = tiny_unet(RESOLUTION).eval()
    heads, prior = guidance_parts(unet)
    seeds = list(range(args.batch))
    scheduler = make_scheduler(CHURCH_256_SCHEDULER, "ddim", args.steps)
    every_step = {"w_dc": 40.0, "w_dp": 40.0, "scale_mode": "mean", "window": (0.0, 1.0)}
    guided = DepthGuidance(unet, heads, prior, GuidanceConfig(**every_step))
    windowed = DepthGuidance(
        unet, heads, prior, GuidanceConfig(**every_step | {"window": (0.0, 0.5)})
    )
    dcg_only = DepthGuidance(unet, heads, None, GuidanceConfig(**every_step | {"w_dp": 0.0}))
    modes: dict[str, Callable[[], object]] = {
        "unguided": lambda: sample(unet, scheduler, seeds),
        "guided": lambda: sample(unet, scheduler, seeds, guidance=guided),
        "guided_window_50": lambda: sample(unet, scheduler, seeds, guidance=windowed),
        "guided_dcg_only": lambda: sample(unet, scheduler, seeds, guidance=dcg_only),
    }
    guided_steps = {
        "unguided": 0,
        "guided": args.steps,
        "guided_window_50": sum(windowed.config.active(t, 1000) for t in scheduler.timesteps),
        "guided_dcg_only": args.steps,
    }
    for run in modes.values():  # warm-up
        run()
    per_step: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, run in modes.items():
            start = time.perf_counter()
            run()
            per_step[name].append((time.perf_counter() - start) / args.steps)

    channels = list(unet.config.block_out_channels)
    median = {name: statistics.median(v) for name, v in per_step.items()}
    base = median["unguided"]
    ratios = {f"{name}/unguided": median[name] / base for name in modes if name != "unguided"}
    result = {
        "device": "cpu",
        "threads": args.threads,
        "platform": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "unet": {"layout": "church-256", "resolution": RESOLUTION, "channels": channels},
        "heads": {"resolution": heads.resolution, "hidden": list(heads.config.hidden)},
        "prior": {"resolution": prior.resolution, "channels": list(PriorConfig().channels)},
        "sampler": "ddim",
        "steps": args.steps,
        "batch": args.batch,
        "repeats": args.repeats,
        "guided_steps": guided_steps,
        "seconds_per_step_median": median,
        "seconds_per_step_all": per_step,
        "ratios": ratios,
        "note": "CPU, tiny U-Net; real-size (256², church-256 U-Net) numbers would come from a GPU",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in modes:
        print(f"{name:>18}: {median[name] * 1e3:8.1f} ms/step")
    for name, ratio in ratios.items():
        print(f"{name:>27}: {ratio:5.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
