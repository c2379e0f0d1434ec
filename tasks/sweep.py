"""Task for stage ``sweep``: guidance strength calibration (paper Fig. 8, extended over modes).

Every point samples the same ``num_samples`` seeds, so each guided set is compared with the
unguided one sample by sample: dFID / FID with bootstrap CIs, the image–label consistency, and the
paired differences. The design, loop and CSV schema live in :mod:`dag_core.sweep`.
"""

from __future__ import annotations

import shutil
from typing import Any

from dag_core.figures import sweep_figure
from dag_core.interrupt import reporting_progress
from dag_core.metrics.comparison import load_scorer, read_floor
from dag_core.metrics.scorer import GeneratedSet
from dag_core.resumable import (
    forget,
    held_resume_dir,
    input_digest,
    is_done,
    mark_done,
    unit_key,
)
from dag_core.runtime import use_runtime
from dag_core.shards import read_arrays
from dag_core.sweep import (
    check_remedies,
    check_sweep,
    render_point,
    run_sweep,
    sweep_series,
    write_sweep_csvs,
)
from tasks import run_logger, stage_task
from tasks.artifacts import feature_bars
from tasks.synthesize import cached_models


@stage_task
def guidance_sweep(
    models: dict[str, str | None],
    evaluation: dict[str, Any],
    sampling: dict[str, Any],
    guidance: dict[str, Any],
    modes: list[str],
    scales: list[float] | dict[str, list[float]],
    windows: list[list[float]],
    out_dir: str,
    figure: str | None,
    runtime: dict[str, Any] | None = None,
    remedies: dict[str, Any] | None = None,
    floor: str | None = None,
) -> str:
    """Sample every (mode, window, w) point with the same seeds, score it against the unguided
    set, and write one CSV per (mode, window) series into ``out_dir`` (+ a PNG ``figure``).

    ``remedies`` adds one series per named set of guidance overrides (``{name: {scales: [w, ...],
    guidance: {...}}}``, on top of the first mode and window: :func:`dag_core.sweep.
    remedy_settings`). ``floor`` (held-out real pairs, at least ``num_samples``): their scores at
    the same count go into every row as ``floor_*`` columns: what real images score at this
    count. Each rendered point is kept in ``.<out_dir>.resume`` (:mod:`dag_core.resumable`) until
    the CSVs are written, so a stopped sweep's rerun renders only the points it had not."""
    logger = run_logger()
    spec_kw = dict(sampling)
    batch_size = int(spec_kw.pop("batch_size", 16))
    remedies = {} if remedies is None else remedies
    check_sweep(modes, scales, windows, int(spec_kw["num_samples"]))
    check_remedies(remedies, guidance, modes, windows)
    n = int(spec_kw["num_samples"])
    floor_pairs = read_floor(floor, n, "sweep") if floor else None
    rt, device = use_runtime(runtime)
    loaded = cached_models(models["base_model"], models["heads"], models["prior"], rt)
    score = load_scorer(**evaluation, device=device, progress=feature_bars)
    run_logger().info("real set %s: features %s", evaluation["real"], score.real_source)

    with held_resume_dir(out_dir) as work:  # each rendered point is kept until the CSVs are out
        rendered: set[str] = set()

        def render(settings: dict[str, Any], name: str) -> GeneratedSet:
            folder = work / name
            key = unit_key(
                {
                    "sampling": spec_kw,
                    "settings": settings,
                    "models": [input_digest(m) for m in models.values()],
                    "runtime": rt.result_record(),
                }
            )
            if is_done(folder, key):
                logger.info("sweep point %s: samples kept from an interrupted run", name)
            else:
                forget(folder)
                shutil.rmtree(folder, ignore_errors=True)
                render_point(
                    loaded, spec_kw, settings, name, work, batch_size=batch_size, runtime=rt
                )
                mark_done(folder, key)
            rendered.add(name)
            return score.features(*read_arrays(folder))

        def kept() -> str | None:  # what the line of a stopped run says is kept
            return f"{len(rendered)} sweep points rendered" if rendered else None

        with reporting_progress(kept):
            series, base_row = run_sweep(
                score,
                render,
                guidance,
                sweep_series(modes, scales, windows, remedies),
                floor_pairs,
                log=logger.info,
            )
        write_sweep_csvs(out_dir, series)
        logger.info("sweep: %d samples per point vs %d real", base_row["n"], score.n_real)
        if figure:
            sweep_figure(series, figure)
        shutil.rmtree(work, ignore_errors=True)  # the CSVs and the figure are out
    return out_dir
