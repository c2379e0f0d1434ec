"""Stage ``train_heads``: MLP-S / MLP-W on frozen decoder features (paper §3.1, Fig. 2).

Features g_t = [f_t(k)]_{k∈S} of the noised labelled images are computed on the fly by the frozen
U-Net; the strong head reads S = {2, 4, 5, 6, 7}, the weak head W = {6} (configurable). Writes the
heads to ``out_dir`` and held-out accuracy vs t (plus the mean-depth baseline) as DVC metrics/plots.
Every parameter defaults to params.yaml's ``train_heads`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.train_heads import TrainHeadsParams

    main(TrainHeadsParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.train_heads import TrainHeadsParams
from tasks.heads import evaluate_heads, fit_heads

D = stage_defaults("train_heads")


@flow(name="train-heads", persist_result=False)
def train_heads(
    base_model: str = D["base_model"],
    labelled: str = D["labelled"],
    out_dir: str = D["out_dir"],
    norm: dict[str, Any] = D["norm"],
    config: dict[str, Any] = D["config"],
    eval_t: list[int] = D["eval_t"],
    metrics_file: str = D["metrics_file"],
    plots_file: str = D["plots_file"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Train the heads, then report their held-out accuracy at the timesteps ``eval_t``."""
    p = validate(TrainHeadsParams, locals())
    runtime = check_runtime(p["runtime"])
    fit_heads(p["base_model"], p["labelled"], p["out_dir"], p["config"], p["norm"], runtime)
    evaluate_heads(
        p["base_model"],
        p["labelled"],
        p["out_dir"],
        p["eval_t"],
        p["metrics_file"],
        p["plots_file"],
        runtime,
    )
    return p["out_dir"]
