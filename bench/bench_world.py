"""Benchmark: procedural-world rendering throughput at 64×64 on 2 threads (target ≥ 200 scenes/s).

Renders batches of 64×64 scenes for a few seconds after a warm-up and writes
bench/results/world.json. The 1-thread rate is recorded too: on a shared 2-core machine it is often
as fast, and the 1-minute load average is stored so noisy numbers can be read in context.
Run with `make bench` or `python bench/bench_world.py`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads starve shared cores

import json
import time
from pathlib import Path

import torch

from dag_core.world import render

RESOLUTION, BATCH, SECONDS, TARGET = 64, 128, 5.0, 200.0


def rate(threads: int) -> float:
    """Scenes per second rendered at ``RESOLUTION`` with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    render(range(BATCH), RESOLUTION)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        render(range(n, n + BATCH), RESOLUTION)
        n += BATCH
    return n / (time.perf_counter() - start)


def main() -> dict[str, object]:
    """Measure, write bench/results/world.json and print a one-line summary."""
    one = rate(1)
    two = rate(2)
    result = {
        "resolution": RESOLUTION,
        "batch": BATCH,
        "threads": 2,
        "scenes_per_s": round(two, 1),
        "scenes_per_s_1_thread": round(one, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "target": TARGET,
        "meets_target": two >= TARGET,
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"world {RESOLUTION}x{RESOLUTION}, batch {BATCH}: {two:.0f} scenes/s on 2 threads "
        f"({one:.0f} on 1), target {TARGET:.0f}: {'met' if two >= TARGET else 'NOT met'} "
        f"-> {out / 'world.json'}"
    )
    return result


if __name__ == "__main__":
    main()
