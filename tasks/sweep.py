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

from dag_core.errors import DagError
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


def series_name(mode: str, window: list[float] | tuple[float, float]) -> str:
    """File stem of one sweep series: ``<mode>_<lo>-<hi>`` (e.g. ``paper_0-0.6``)."""
    return f"{mode}_{float(window[0]):g}-{float(window[1]):g}"


def _variant_name(text: str) -> str:
    """A plain folder name for one sweep point (``paper_0-0.6-w0.3`` → ``paper_0-0_6-w0_3``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def mode_scales(scales: list[float] | dict[str, list[float]], mode: str) -> list[float]:
    """The scales of ``mode``: one list for every mode, or a ``{mode: [w, ...]}`` mapping (w
    means different things per mode, :mod:`dag_core.strength`); sorted, 0 always included."""
    chosen = scales.get(mode) if isinstance(scales, dict) else scales
    if not chosen:
        raise DagError(f"sweep has no scales for mode '{mode}'")
    return sorted({0.0, *(float(w) for w in chosen)})


def point_settings(
    guidance: dict[str, Any],
    mode: str,
    window: list[float] | tuple[float, float],
    w: float,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Guidance settings of one sweep point: the shared ``guidance``, w_dc = w_dp = w, the mode
    and window, then a remedy's ``overrides`` (``w_dc: 0`` = DPG alone)."""
    return {
        **guidance,
        "w_dc": w,
        "w_dp": w,
        "scale_mode": mode,
        "window": list(window),
        **(overrides or {}),
    }


def remedy_settings(
    guidance: dict[str, Any],
    modes: list[str],
    windows: list[list[float]],
    remedy: dict[str, Any],
    w: float,
) -> dict[str, Any]:
    """Settings of one remedy point: :func:`point_settings` on the first mode and window."""
    return point_settings(guidance, modes[0], windows[0], w, remedy.get("guidance"))


def check_remedies(
    remedies: dict[str, Any],
    guidance: dict[str, Any],
    modes: list[str],
    windows: list[list[float]],
) -> None:
    """One-line errors for remedy series (name, scales, guidance overrides) before sampling."""
    from dag_core.synthesis import guidance_config

    if not isinstance(remedies, dict):
        raise DagError(f"sweep remedies must map names to {{scales, guidance}}, got {remedies!r}")
    taken = {series_name(m, w) for m in modes for w in windows}
    for name, remedy in remedies.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in taken:
            raise DagError(f"sweep remedy name {name!r} must be a new plain name ([A-Za-z0-9_-])")
        if not isinstance(remedy, dict) or set(remedy) - {"scales", "guidance"}:
            raise DagError(f"sweep remedy '{name}' must map scales and guidance, got {remedy!r}")
        scales = remedy.get("scales")
        if not isinstance(scales, list) or not scales:
            raise DagError(f"sweep remedy '{name}' needs a non-empty scales list, got {scales!r}")
        overrides = remedy.get("guidance", {})
        if not isinstance(overrides, dict):
            raise DagError(f"sweep remedy '{name}' guidance must be a mapping")
        fixed = {k: overrides[k] for k in ("w_dc", "w_dp") if k in overrides}
        if len(fixed) == 2 or any(v != 0 for v in fixed.values()):
            # w = 0 of every series is the shared unguided set, and w must move something
            raise DagError(
                f"sweep remedy '{name}' may only switch one term off (w_dc: 0 or w_dp: 0), "
                f"got {fixed}"
            )
        for w in scales:
            if isinstance(w, bool) or not isinstance(w, int | float):
                raise DagError(f"sweep remedy '{name}' scale must be a number, got {w!r}")
            guidance_config(f"remedy {name}", remedy_settings(guidance, modes, windows, remedy, w))


def check_sweep(
    modes: list[str],
    scales: list[float] | dict[str, list[float]],
    windows: list[list[float]],
    num_samples: int,
) -> None:
    """One-line errors for a sweep that cannot run, before anything is sampled."""
    from dag_core.guidance import GuidanceConfig

    if not modes or not scales or not windows:
        raise DagError("sweep needs at least one mode, one scale and one window")
    if isinstance(scales, dict) and set(scales) - set(modes):
        raise DagError(f"sweep scales name unknown mode(s) {sorted(set(scales) - set(modes))}")
    for mode in modes:
        for window in windows:
            for w in mode_scales(scales, mode):
                GuidanceConfig(w_dc=w, w_dp=w, scale_mode=mode, window=tuple(window))
    if num_samples < 2:
        raise DagError(f"sweep num_samples must be >= 2, got {num_samples}")


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
