"""Stage ``sweep``: calibrate guidance strength — dFID, FID and consistency vs w (paper Fig. 8).

For each ``scale_mode`` (:mod:`dag_core.strength`) and guidance window, sample ``num_samples``
images at every w = w_dc = w_dp with the same seeds, and score each set against the unguided one
(bootstrap CIs, paired differences); ``remedies`` add named series with other guidance settings.
One CSV per series lands in ``out_dir`` (DVC plots) and a PNG figure in ``figure``. Points can
also be queued as DVC experiments (README, "Calibrating guidance").
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._cli import check_runtime, run_stage
from tasks.sweep import guidance_sweep


@flow(name="sweep", persist_result=False)
def sweep(
    base_model: str = "models/base",
    heads: str = "models/heads",
    prior: str | None = "models/prior",
    real: str = "data/reference/test",
    estimator: str = "models/reference_depth",
    extractor: str = "auto",
    fid_batch_size: int = 50,
    n_boot: int = 500,
    num_samples: int = 64,
    batch_size: int = 32,
    seed: int = 1,
    sampler: str = "ddim",
    steps: int = 20,
    eta: float = 0.0,
    guidance: dict[str, Any] | None = None,
    modes: list[str] | None = None,
    scales: list[float] | dict[str, list[float]] | None = None,
    windows: list[list[float]] | None = None,
    remedies: dict[str, Any] | None = None,
    floor: str | None = None,
    out_dir: str = "plots/sweep",
    figure: str | None = "plots/sweep.png",
    runtime: dict[str, Any] | None = None,
) -> str:
    """Write one CSV per (mode, window) into ``out_dir`` and the figure; returns ``out_dir``.

    ``scales``: one list for every mode or ``{mode: [w, ...]}`` (w = 0 is always included).
    ``remedies``: extra series ``{name: {scales: [w, ...], guidance: {overrides}}}`` on the first
    mode and window (gradient normalisation, low-pass, SDS prior gradient, DPG alone, ...).
    ``floor``: held-out real pairs scored at the same count (``floor_*`` columns, dashed lines)."""
    runtime = check_runtime(runtime)
    return guidance_sweep(
        models={"base_model": base_model, "heads": heads, "prior": prior},
        evaluation={
            "real": real,
            "estimator": estimator,
            "extractor": extractor,
            "batch_size": fid_batch_size,
            "n_boot": n_boot,
        },
        sampling={
            "num_samples": num_samples,
            "batch_size": batch_size,
            "seed": seed,
            "sampler": sampler,
            "steps": steps,
            "eta": eta,
        },
        guidance=dict(guidance or {}),
        modes=list(modes or ["paper", "mean"]),
        scales=scales or [0, 40],
        windows=[list(w) for w in (windows or [[0.0, 0.6]])],
        remedies=remedies if remedies is not None else {},
        floor=floor,
        out_dir=out_dir,
        figure=figure,
        runtime=runtime,
    )


if __name__ == "__main__":
    run_stage(sweep, "sweep")
