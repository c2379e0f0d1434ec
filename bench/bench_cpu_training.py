"""Benchmark: the CPU training levers of the default run, each side by side with what it replaced.

* heads: a features-only U-Net forward that stops after the last head layer
  (:meth:`~dag_core.features.FeatureExtractor.features`) vs the full forward, and every pixel of
  the 32² maps once (``pixels_per_image: null``) vs 2048 random draws: seconds per heads step on
  the embedded base model;
* downstream: two depth nets one after the other on all torch threads vs at once in two threads
  of one torch thread each (stage ``downstream``, ``workers: 2``).

Each pair runs alternately ``--repeats`` times; the best time of each counts. Random images and
depth (the timings do not depend on the content). Writes bench/results/cpu_training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dag_core.backbone import load_base_model  # noqa: E402
from dag_core.configs.downstream import DownstreamConfig  # noqa: E402
from dag_core.configs.heads import HeadConfig  # noqa: E402
from dag_core.depthnorm import DepthNorm  # noqa: E402
from dag_core.downstream import train_depth_net  # noqa: E402
from dag_core.features import FeatureExtractor  # noqa: E402
from dag_core.heads import random_batches, train_heads  # noqa: E402
from dag_core.runtime import shared_cpu  # noqa: E402
from dag_core.shards import Sample, write_dataset  # noqa: E402

BASE = ROOT / "dag_core/embedded/world-ddpm-32"


def best_of(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Best wall time of each callable, the callables alternating ``repeats`` times."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def random_pairs(tmp: Path, n: int = 64) -> Path:
    """``n`` random 32² image–depth pairs written as a dataset under ``tmp`` (its path)."""
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            id=f"b{i}",
            rgb=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            depth=rng.uniform(0.5, 8.0, (32, 32)).astype(np.float32),
            seed=i,
        )
        for i in range(n)
    ]
    write_dataset(tmp / "pairs", samples, shard_size=32)
    return tmp / "pairs"


def heads_runs(steps: int) -> dict[str, Callable[[], None]]:
    base = load_base_model(str(BASE))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 32, 32, generator=g) * 2 - 1
    depth = 0.5 + 4 * torch.rand(24, 1, 32, 32, generator=g)
    early = FeatureExtractor.features

    def full(self: FeatureExtractor, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        return self(x, t)[1]

    def run(forward: Callable[..., list[torch.Tensor]], pixels: int | None) -> Callable[[], None]:
        config = HeadConfig(steps=steps, pixels_per_image=pixels)

        def go() -> None:
            FeatureExtractor.features = forward  # type: ignore[method-assign]
            try:
                batches = random_batches(images, depth, config.batch_size)
                train_heads(base.unet, base.scheduler, batches, config, DepthNorm(), log=str)
            finally:
                FeatureExtractor.features = early  # type: ignore[method-assign]

        return go

    return {
        "full_forward_2048_draws": run(full, 2048),
        "early_exit_2048_draws": run(early, 2048),
        "early_exit_every_pixel": run(early, None),
    }


def downstream_runs(steps: int, data: Path) -> dict[str, Callable[[], None]]:
    config = DownstreamConfig(steps=steps)

    def one() -> None:
        train_depth_net([data], config, DepthNorm(), log=str)

    def sequential() -> None:
        one()
        one()

    def two_threads() -> None:
        with shared_cpu(2):
            threads = [threading.Thread(target=one) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    return {"two_nets_one_after_the_other": sequential, "two_nets_at_once": two_threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads-steps", type=int, default=60)
    ap.add_argument("--net-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench/results/cpu_training.json"))
    args = ap.parse_args()
    heads = best_of(heads_runs(args.heads_steps), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        nets = best_of(downstream_runs(args.net_steps, random_pairs(Path(tmp))), args.repeats)
    result = {
        "benchmark": "cpu_training_levers",
        "device": "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "repeats": args.repeats,
        "heads_steps": args.heads_steps,
        "heads_seconds_per_step": {k: v / args.heads_steps for k, v in heads.items()},
        "speedup_early_exit": heads["full_forward_2048_draws"] / heads["early_exit_2048_draws"],
        "speedup_every_pixel": heads["early_exit_2048_draws"] / heads["early_exit_every_pixel"],
        "net_steps": args.net_steps,
        "downstream_seconds": nets,
        "speedup_two_nets_at_once": nets["two_nets_one_after_the_other"] / nets["two_nets_at_once"],
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
