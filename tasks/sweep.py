"""Task for stage ``sweep``: guidance strength calibration (paper Fig. 8, extended over modes).

Every point samples the same ``num_samples`` seeds, so each guided set is compared with the
unguided one sample by sample: dFID / FID with bootstrap CIs, the image–label consistency, and the
paired differences (:class:`dag_core.metrics.scorer.Scorer`).
"""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path
from typing import Any

from dag_core.configs.sweep import (
    check_remedies,
    check_sweep,
    mode_scales,
    point_settings,
    series_name,
)
from dag_core.figures import sweep_figure
from dag_core.metrics.scorer import GeneratedSet
from dag_core.runtime import use_runtime
from dag_core.shards import write_manifest
from dag_core.synthesis import SynthesisSpec, render_shard
from tasks import run_logger, stage_task
from tasks.evaluation import _images_and_labels, read_floor, scorer
from tasks.synthesize import cached_models

COLUMNS = (
    "w",
    "dfid",
    "dfid_ci_lo",
    "dfid_ci_hi",
    "fid",
    "fid_ci_lo",
    "fid_ci_hi",
    "consistency_abs_rel",
    "consistency_abs_rel_ci_lo",
    "consistency_abs_rel_ci_hi",
    "dfid_diff",
    "dfid_diff_ci_lo",
    "dfid_diff_ci_hi",
    "fid_diff",
    "fid_diff_ci_lo",
    "fid_diff_ci_hi",
    "consistency_abs_rel_diff",
    "consistency_abs_rel_diff_ci_lo",
    "consistency_abs_rel_diff_ci_hi",
    "consistency_delta1",
    "kid_mean",
    "depth_kid_mean",
    "precision",
    "recall",
    "floor_dfid",
    "floor_fid",
    "floor_consistency_abs_rel",
)


def _variant_name(text: str) -> str:
    """A plain folder name for one sweep point (``paper_0-0.6-w0.3`` → ``paper_0-0_6-w0_3``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


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
    guidance: {...}}}``, on top of the first mode and window: :func:`remedy_settings`).
    ``floor`` (held-out real pairs, at least ``num_samples``): their scores at the same count go
    into every row as ``floor_*`` columns: what real images score at this count."""
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
    score = scorer(**evaluation, device=device)
    series: dict[str, list[dict[str, float]]] = {}

    def render(settings: dict[str, Any], name: str, tmp: Path) -> GeneratedSet:
        spec = SynthesisSpec(
            shard_size=spec_kw["num_samples"],
            variants={name: settings},
            runtime=rt.result_record(),
            **spec_kw,
        )
        path = render_shard(loaded, spec, name, 0, tmp / name, batch_size=batch_size, runtime=rt)
        write_manifest(path.parent)  # a whole one-shard dataset, read back verified
        return score.features(*_images_and_labels(path.parent, None))

    with tempfile.TemporaryDirectory() as tmp:
        base = render({"w_dc": 0.0, "w_dp": 0.0}, "w0", Path(tmp))
        base_row, base_diff = score.summary(base, base)  # w = 0 of every series
        floor_cols: dict[str, float] = {}
        if floor_pairs is not None:
            floor_row, _ = score.summary(score.features(*floor_pairs))
            floor_cols = {
                f"floor_{k}": floor_row[k] for k in ("dfid", "fid", "consistency_abs_rel")
            }
            logger.info("sweep floor (held-out real, n=%d): %s", n, floor_cols)
        # (series name, its scales, mode, window, remedy overrides)
        points: list[tuple[str, list[float], str, list[float], dict[str, Any] | None]] = [
            (series_name(mode, window), mode_scales(scales, mode), mode, window, None)
            for mode in modes
            for window in windows
        ]
        points += [
            (
                name,
                sorted({0.0, *(float(w) for w in remedy["scales"])}),
                modes[0],
                windows[0],
                remedy.get("guidance"),
            )
            for name, remedy in remedies.items()
        ]
        for name, series_scales, mode, window, overrides in points:
            rows = []
            for w in series_scales:
                if w == 0:
                    row, diff = base_row, base_diff
                else:
                    settings = point_settings(guidance, mode, window, w, overrides)
                    gen = render(settings, _variant_name(f"{name}-w{w:g}"), Path(tmp))
                    row, diff = score.summary(gen, base)
                rows.append({"w": w, **row, **(diff or {}), **floor_cols})
                logger.info(
                    "sweep %s w=%g: dFID %.2f [%.2f, %.2f], consistency %.4f",
                    name,
                    w,
                    row["dfid"],
                    row["dfid_ci_lo"],
                    row["dfid_ci_hi"],
                    row.get("consistency_abs_rel", float("nan")),
                )
            series[name] = rows
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.csv"):
        old.unlink()
    for name, rows in series.items():
        with (out / f"{name}.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    logger.info("sweep: %d samples per point vs %d real", base_row["n"], score.n_real)
    if figure:
        sweep_figure(series, figure)
    return out_dir
