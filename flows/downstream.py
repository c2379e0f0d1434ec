"""Stage ``downstream``: train a monocular depth U-Net on real vs synthetic data (paper §5.3).

One depth network per training set — the labelled pairs, the unguided synthetic set and the DAG
set — with the same budget, read through the shard reader; each is tested on the held-out
procedural split and, when ``nyu_path`` is set, on NYU-Depth v2 (official .mat + splits, or the
DenseDepth ``nyu2_test`` layout) with the Eigen crop.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._cli import check_runtime, run_stage
from tasks.evaluation import evaluate_depth_nets, fit_depth_net


@flow(name="downstream", persist_result=False)
def downstream(
    train_sets: dict[str, str] | None = None,
    world_test: str = "data/reference/test",
    nyu_path: str | None = None,
    nyu_median_scaling: bool = True,
    models_dir: str = "models/downstream",
    norm: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    metrics_file: str = "metrics/downstream.json",
    table_file: str = "metrics/downstream.md",
    runtime: dict[str, Any] | None = None,
) -> str:
    """Train one depth net per entry of ``train_sets`` (name → shard dir) and evaluate them all."""
    runtime = check_runtime(runtime)
    sets = train_sets or {
        "labelled": "data/labelled/train",
        "unguided": "data/synthetic/unguided",
        "dag": "data/synthetic/dag",
    }
    models = {
        name: fit_depth_net(
            [path], f"{models_dir}/{name}", dict(config or {}), dict(norm or {}), runtime
        )
        for name, path in sets.items()
    }
    return evaluate_depth_nets(
        models, world_test, nyu_path, nyu_median_scaling, metrics_file, table_file, runtime
    )


if __name__ == "__main__":
    run_stage(downstream, "downstream")
