"""Stage ``sweep``: calibrate guidance strength — dFID, FID and consistency vs w (paper Fig. 8).

For each ``scale_mode`` (:mod:`dag_core.strength`) and guidance window, sample ``num_samples``
images at every w = w_dc = w_dp with the same seeds, and score each set against the unguided one
(bootstrap CIs, paired differences); ``remedies`` add named series with other guidance settings.
One CSV per series lands in ``out_dir`` (DVC plots) and a PNG figure in ``figure``. Points can
also be queued as DVC experiments (README, "Calibrating guidance"). Every parameter defaults to
params.yaml's ``sweep`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.sweep import SweepParams

    main(SweepParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.sweep import SweepParams
from tasks.sweep import guidance_sweep

D = stage_defaults("sweep")


@flow(name="sweep", persist_result=False)
def sweep(
    base_model: str = D["base_model"],
    heads: str = D["heads"],
    prior: str | None = D["prior"],
    real: str = D["real"],
    estimator: str = D["estimator"],
    extractor: str = D["extractor"],
    fid_batch_size: int = D["fid_batch_size"],
    n_boot: int = D["n_boot"],
    num_samples: int = D["num_samples"],
    batch_size: int = D["batch_size"],
    seed: int = D["seed"],
    sampler: str = D["sampler"],
    steps: int = D["steps"],
    eta: float = D["eta"],
    guidance: dict[str, Any] = D["guidance"],
    modes: list[str] = D["modes"],
    scales: list[float] | dict[str, list[float]] = D["scales"],
    windows: list[list[float]] = D["windows"],
    remedies: dict[str, Any] = D["remedies"],
    floor: str | None = D["floor"],
    out_dir: str = D["out_dir"],
    figure: str | None = D["figure"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Write one CSV per (mode, window) into ``out_dir`` and the figure; returns ``out_dir``.

    ``guidance``: the settings every point shares (not w_dc, w_dp, scale_mode, window: each
    point sets those). ``scales``: one list for every mode or ``{mode: [w, ...]}`` (w = 0 is
    always included). ``remedies``: extra series ``{name: {scales: [w, ...], guidance:
    {overrides}}}`` on the first mode and window (gradient normalisation, low-pass, SDS prior
    gradient, DPG alone, ...). ``floor``: held-out real pairs scored at the same count
    (``floor_*`` columns, dashed lines)."""
    p = validate(SweepParams, locals())
    runtime = check_runtime(p["runtime"])
    return guidance_sweep(
        models={"base_model": p["base_model"], "heads": p["heads"], "prior": p["prior"]},
        evaluation={
            "real": p["real"],
            "estimator": p["estimator"],
            "extractor": p["extractor"],
            "batch_size": p["fid_batch_size"],
            "n_boot": p["n_boot"],
        },
        sampling={
            k: p[k] for k in ("num_samples", "batch_size", "seed", "sampler", "steps", "eta")
        },
        guidance=p["guidance"],
        modes=p["modes"],
        scales=p["scales"],
        windows=p["windows"],
        remedies=p["remedies"],
        floor=p["floor"],
        out_dir=p["out_dir"],
        figure=p["figure"],
        runtime=runtime,
    )
