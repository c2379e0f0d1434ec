"""Stage ``train_heads``: MLP-S / MLP-W on frozen decoder features (paper §3.1, Fig. 2).

Features g_t = [f_t(k)]_{k∈S} of the noised labelled images are computed on the fly by the frozen
U-Net; the strong head reads S = {2, 4, 5, 6, 7}, the weak head W = {6} (configurable). Writes the
heads to ``out_dir`` and held-out accuracy vs t (plus the mean-depth baseline) as DVC metrics/plots.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._cli import check_runtime, run_stage
from tasks.heads import evaluate_heads, fit_heads


@flow(name="train-heads", persist_result=False)
def train_heads(
    base_model: str = "models/base",
    labelled: str = "data/labelled",
    out_dir: str = "models/heads",
    norm: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    eval_t: list[int] | None = None,
    metrics_file: str = "metrics/heads.json",
    plots_file: str = "plots/heads_vs_t.csv",
    runtime: dict[str, Any] | None = None,
) -> str:
    """Train the heads, then report their held-out accuracy at the timesteps ``eval_t``."""
    runtime = check_runtime(runtime)
    fit_heads(base_model, labelled, out_dir, dict(config or {}), dict(norm or {}), runtime)
    evaluate_heads(
        base_model,
        labelled,
        out_dir,
        eval_t or [0, 100, 250, 500],
        metrics_file,
        plots_file,
        runtime,
    )
    return out_dir


if __name__ == "__main__":
    run_stage(train_heads, "train_heads")
