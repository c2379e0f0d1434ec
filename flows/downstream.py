"""Stage ``downstream``: train a monocular depth U-Net on real vs synthetic data (paper §5.3).

One depth network per training set — the labelled pairs, the unguided synthetic set and the DAG
set — with the same budget, read through the shard reader; each is tested on the held-out
procedural split and, when ``nyu_path`` is set, on NYU-Depth v2 (official .mat + splits, or the
DenseDepth ``nyu2_test`` layout) with the Eigen crop. ``runs`` > 1 trains every set that many
times (seeds ``config.seed`` + 0 … runs − 1, the same seeds for every set), so the paired
difference's CI covers training noise as well as the test images. Nets are saved in
``{models_dir}/{set}/seed-{seed}``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from dag_core.errors import DagError
from flows._cli import check_runtime, run_stage
from tasks.evaluation import downstream_config, evaluate_depth_nets, fit_depth_net


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
    paired_reference: str | None = "unguided",
    n_boot: int = 1000,
    runs: int = 1,
) -> str:
    """Train one depth net per entry of ``train_sets`` (name → shard dir) and evaluate them all;
    every other set is compared with ``paired_reference`` on the same test images (bootstrap CI
    over images — and, with ``runs`` > 1, over training runs — ``n_boot`` resamples)."""
    runtime = check_runtime(runtime)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise DagError(f"downstream n_boot must be an int >= 10, got {n_boot!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise DagError(f"downstream runs must be an int >= 1, got {runs!r}")
    sets = train_sets or {
        "labelled": "data/labelled/train",
        "unguided": "data/synthetic/unguided",
        "dag": "data/synthetic/dag",
    }
    if paired_reference is not None and paired_reference not in sets:
        raise DagError(
            f"downstream paired_reference {paired_reference!r} is not one of the train_sets "
            f"({', '.join(sets)})"
        )
    config = dict(config or {})
    first = downstream_config(config).seed  # the whole config is checked before any net trains
    seeds = [first + r for r in range(runs)]
    models = {
        name: [
            fit_depth_net(
                [path],
                f"{models_dir}/{name}/seed-{seed}",
                {**config, "seed": seed},
                dict(norm or {}),
                runtime,
            )
            for seed in seeds
        ]
        for name, path in sets.items()
    }
    return evaluate_depth_nets(
        models,
        world_test,
        nyu_path,
        nyu_median_scaling,
        metrics_file,
        table_file,
        runtime,
        paired_reference,
        n_boot,
    )


if __name__ == "__main__":
    run_stage(downstream, "downstream")
