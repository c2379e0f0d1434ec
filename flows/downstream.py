"""Stage ``downstream``: train a monocular depth U-Net on real vs synthetic data (paper §5.3).

One depth network per training set — the labelled pairs, the unguided synthetic set and the DAG
set — with the same budget, read through the shard reader; each is tested on the held-out
procedural split and, when ``nyu_path`` is set, on NYU-Depth v2 (official .mat + splits, or the
DenseDepth ``nyu2_test`` layout) with the Eigen crop. ``runs`` > 1 trains every set that many
times (seeds ``config.seed`` + 0 … runs − 1, the same seeds for every set), so the paired
difference's CI covers training noise as well as the test images. Nets are saved in
``{models_dir}/{set}/seed-{seed}``. Every parameter defaults to params.yaml's ``downstream``
group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows._cli.main)
    from flows._cli import main
    from flows.schema.downstream import DownstreamParams

    main(DownstreamParams)

from typing import Any

from prefect import flow

from dag_core.configs.downstream import DownstreamConfig
from flows._cli import check_runtime
from flows._params import stage_defaults
from flows.schema.base import validate
from flows.schema.downstream import DownstreamParams
from tasks.evaluation import evaluate_depth_nets, fit_depth_net

D = stage_defaults("downstream")


@flow(name="downstream", persist_result=False)
def downstream(
    train_sets: dict[str, str] = D["train_sets"],
    world_test: str = D["world_test"],
    nyu_path: str | None = D["nyu_path"],
    nyu_median_scaling: bool = D["nyu_median_scaling"],
    models_dir: str = D["models_dir"],
    norm: dict[str, Any] = D["norm"],
    config: dict[str, Any] = D["config"],
    metrics_file: str = D["metrics_file"],
    table_file: str = D["table_file"],
    runtime: dict[str, Any] = D["runtime"],
    paired_reference: str | None = D["paired_reference"],
    n_boot: int = D["n_boot"],
    runs: int = D["runs"],
) -> str:
    """Train one depth net per entry of ``train_sets`` (name → shard dir) and evaluate them all;
    every other set is compared with ``paired_reference`` on the same test images (bootstrap CI
    over images — and, with ``runs`` > 1, over training runs — ``n_boot`` resamples)."""
    p = validate(DownstreamParams, locals())
    runtime = check_runtime(p["runtime"])
    config = p["config"]
    first = DownstreamConfig.from_params(config).seed
    seeds = [first + r for r in range(p["runs"])]
    models = {
        name: [
            fit_depth_net(
                [path],
                f"{p['models_dir']}/{name}/seed-{seed}",
                {**config, "seed": seed},
                p["norm"],
                runtime,
            )
            for seed in seeds
        ]
        for name, path in p["train_sets"].items()
    }
    return evaluate_depth_nets(
        models,
        p["world_test"],
        p["nyu_path"],
        p["nyu_median_scaling"],
        p["metrics_file"],
        p["table_file"],
        runtime,
        p["paired_reference"],
        p["n_boot"],
    )
