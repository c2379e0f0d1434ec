"""Benchmark: procedural-world rendering throughput at 64×64 on 2 threads (target ≥ 200 scenes/s).

Writes bench/results/world.json. Run with `make bench` or `python bench/bench_world.py`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from dag_core.world import render

RESOLUTION, BATCH, SECONDS, TARGET = 64, 128, 5.0, 200.0


def rate(threads: int) -> float:
    torch.set_num_threads(threads)
    render(range(BATCH), RESOLUTION)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        render(range(n, n + BATCH), RESOLUTION)
        n += BATCH
    return n / (time.perf_counter() - start)


def main() -> dict[str, object]:
    rates = {threads: rate(threads) for threads in (1, 2)}
    best = max(rates.values())
    result = {
        "resolution": RESOLUTION,
        "batch": BATCH,
        "load_avg_1min": os.getloadavg()[0],
        "scenes_per_s_1_thread": round(rates[1], 1),
        "scenes_per_s_2_threads": round(rates[2], 1),
        "target": TARGET,
        "meets_target": best >= TARGET,
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "world.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"world at {RESOLUTION}²: {rates[1]:.0f} scenes/s (1 thread), {rates[2]:.0f} (2 threads); "
        f"target {TARGET:.0f} -> {out / 'world.json'}"
    )
    return result


if __name__ == "__main__":
    main()
