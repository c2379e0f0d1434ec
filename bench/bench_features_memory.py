"""Peak memory of on-the-fly depth-head training at 256² with the real church-256 U-Net layout.

The paper trains MLP-S / MLP-W on ~100 labelled images within an 8 GB budget. Here features are
never cached: every step runs the frozen U-Net once on a fresh noisy batch and regresses only
``pixels_per_image`` sampled pixels, so memory depends on the batch size, the pixel count and the
U-Net — not on the number N of training images (beyond the N images themselves, ~1 MB each).
To show it, the script trains in two fresh child processes that hold N = ``--images`` and
N = ``--small-images`` labelled images, and records each one's peak resident set size
(``VmHWM`` from /proc/self/status, which, unlike tracemalloc, sees torch's allocations).

Usage: ``python bench/bench_features_memory.py [--steps 3 --batch-size 2 --pixels 4096]``;
writes ``bench/results/features_memory.json``. Random weights (nothing downloadable here); the
memory footprint is the same as with the pretrained google/ddpm-church-256 weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

TARGET_GB = 8.0
RESULTS = Path(__file__).resolve().parent / "results" / "features_memory.json"


def peak_rss_gb() -> float:
    """Peak resident set size of this process in GB (VmHWM; ru_maxrss as a fallback)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def child(args: argparse.Namespace) -> dict:
    """Build the church-256 U-Net, hold ``args.images`` labelled images, train heads a few steps."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from dag_core.depthnorm import DepthNorm
    from dag_core.heads import HeadConfig, random_batches, train_heads
    from dag_core.unet_configs import CHURCH_256_CONFIG, CHURCH_256_SCHEDULER

    torch.manual_seed(0)
    unet = UNet2DModel(**CHURCH_256_CONFIG).eval().requires_grad_(False)
    scheduler = DDPMScheduler(**CHURCH_256_SCHEDULER)
    after_model = peak_rss_gb()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 3, 256, 256, generator=generator) * 2 - 1
    depths = 0.5 + 9 * torch.rand(args.images, 1, 256, 256, generator=generator)
    config = HeadConfig(
        steps=args.steps, batch_size=args.batch_size, pixels_per_image=args.pixels, lr=1e-3
    )
    start = time.perf_counter()
    train_heads(
        unet,
        scheduler,
        random_batches(images, depths, config.batch_size),
        config,
        DepthNorm(),
        log=lambda message: print(message, file=sys.stderr),
    )
    seconds = time.perf_counter() - start
    return {
        "images": args.images,
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "peak_rss_after_model_gb": round(after_model, 3),
        "seconds_per_step": round(seconds / args.steps, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--pixels", type=int, default=4096, help="pixels per image per step")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--small-images", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    runs = []
    for n in (args.small_images, args.images):
        command = [
            sys.executable, __file__, "--child", "--images", str(n), "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--pixels", str(args.pixels),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    peak = max(run["peak_rss_gb"] for run in runs)
    result = {
        "benchmark": "on-the-fly MLP-S/MLP-W training memory, church-256 layout at 256x256",
        "device": "cpu",
        "machine": platform.platform(),
        "strong_blocks": [2, 4, 5, 6, 7],
        "weak_blocks": [6],
        "batch_size": args.batch_size,
        "pixels_per_image": args.pixels,
        "steps": args.steps,
        "runs": runs,
        "peak_rss_gb": peak,
        "target_gb": TARGET_GB,
        "within_target": peak <= TARGET_GB,
        "note": (
            "features are computed per batch and never cached, so memory does not grow with the "
            "number of training images beyond the images themselves (compare the two runs)"
        ),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for run in runs:
        print(
            f"N={run['images']:>4}: peak RSS {run['peak_rss_gb']:.2f} GB "
            f"(model alone {run['peak_rss_after_model_gb']:.2f} GB), "
            f"{run['seconds_per_step']} s/step"
        )
    print(f"peak {peak:.2f} GB vs {TARGET_GB:.0f} GB target -> {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
