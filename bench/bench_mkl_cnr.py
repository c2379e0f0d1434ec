"""Benchmark: the CPU cost of MKL's conditional numerical reproducibility (``MKL_CBWR=AUTO``).

``import dag_core`` before torch sets ``MKL_CBWR=AUTO``: without it, MKL's kernels on AVX-512
CPUs gave other low bits from run to run (a resumed synthesis re-rendered a shard to other bytes
than the uninterrupted run). This prices it on the default run's three CPU workloads: DAG-guided
and unguided DDIM sampling on the embedded base U-Net (default heads and prior, random weights),
heads training steps, and downstream depth-net training steps.

MKL reads ``MKL_CBWR`` once, when torch loads it, so each mode runs in its own child process:
``on`` with ``MKL_CBWR=AUTO``, ``off`` with it unset and torch imported before dag_core. The
children alternate ``--rounds`` times; the best time of each workload counts.
Writes bench/results/mkl_cnr.json.

    python bench/bench_mkl_cnr.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "dag_core/embedded/world-ddpm-32"
OUT = ROOT / "bench/results/mkl_cnr.json"


def child(sampling_steps: int, heads_steps: int, net_steps: int) -> dict[str, float]:
    """Seconds of each workload in this process (best of two), as MKL was loaded."""
    import torch  # before dag_core (and the benches importing it): MKL_CBWR as the parent gave it
    from bench_cpu_training import best_of, random_pairs
    from bench_guidance import guidance_parts

    from dag_core.backbone import load_base_model
    from dag_core.configs.downstream import DownstreamConfig
    from dag_core.configs.heads import HeadConfig
    from dag_core.depthnorm import DepthNorm
    from dag_core.downstream import train_depth_net
    from dag_core.guidance import DepthGuidance, GuidanceConfig
    from dag_core.heads import random_batches, train_heads
    from dag_core.sampling import make_scheduler, sample

    base = load_base_model(str(BASE))
    unet = base.unet.eval()
    heads, prior = guidance_parts(unet)
    guidance = DepthGuidance(unet, heads, prior, GuidanceConfig())
    seeds = list(range(8))
    config = HeadConfig(steps=heads_steps)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 32, 32, generator=g) * 2 - 1
    depth = 0.5 + 4 * torch.rand(24, 1, 32, 32, generator=g)
    pairs = random_pairs(Path(tempfile.mkdtemp()))

    def scheduler():
        return make_scheduler(base.scheduler, "ddim", sampling_steps)

    runs = {
        "sampling_unguided": lambda: sample(unet, scheduler(), seeds),
        "sampling_dag": lambda: sample(unet, scheduler(), seeds, guidance=guidance),
        "heads_training": lambda: train_heads(
            unet,
            base.scheduler,
            random_batches(images, depth, config.batch_size),
            config,
            DepthNorm(),
            log=str,
        ),
        "downstream_training": lambda: train_depth_net(
            [pairs], DownstreamConfig(steps=net_steps), DepthNorm(), log=str
        ),
    }
    return best_of(runs, repeats=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sampling-steps", type=int, default=10)
    ap.add_argument("--heads-steps", type=int, default=30)
    ap.add_argument("--net-steps", type=int, default=60)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    sizes = (args.sampling_steps, args.heads_steps, args.net_steps)
    if args.child:
        print(json.dumps(child(*sizes)))
        return
    cmd = [sys.executable, __file__, "--child"]
    cmd += ["--sampling-steps", str(sizes[0]), "--heads-steps", str(sizes[1])]
    cmd += ["--net-steps", str(sizes[2])]
    env_off = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    modes = {"on": {**env_off, "MKL_CBWR": "AUTO"}, "off": env_off}
    best: dict[str, dict[str, float]] = {mode: {} for mode in modes}
    for _ in range(args.rounds):
        for mode, env in modes.items():
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            for name, seconds in json.loads(out.splitlines()[-1]).items():
                best[mode][name] = min(best[mode].get(name, float("inf")), seconds)
    import torch

    result = {
        "benchmark": "mkl_conditional_numerical_reproducibility",
        "device": "cpu",
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "rounds": args.rounds,
        "sampling": {"sampler": "ddim", "steps": sizes[0], "batch": 8},
        "heads_steps": sizes[1],
        "net_steps": sizes[2],
        "seconds": best,
        "cost_on_over_off": {k: best["on"][k] / best["off"][k] for k in best["on"]},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
