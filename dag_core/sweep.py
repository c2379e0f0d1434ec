"""Guidance strength calibration: the sweep's design, its loop and its CSVs (paper Fig. 8).

A sweep samples the same ``num_samples`` seeds at every point w = w_dc = w_dp of every
(scale mode, guidance window) series, plus named *remedy* series with other guidance settings on
the first mode and window, so each guided set is compared with the unguided one (w = 0, shared by
every series) sample by sample (:class:`~dag_core.metrics.scorer.Scorer`). Each series becomes one
CSV with the columns :data:`COLUMNS` (:func:`write_sweep_csvs`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dag_core.atomic import atomic_open
from dag_core.errors import DagError
from dag_core.runtime import RuntimeConfig
from dag_core.shards import write_manifest
from dag_core.synthesis import SynthesisModels, SynthesisSpec, guidance_config, render_shard

if TYPE_CHECKING:  # the scorer loads torch-fidelity
    from dag_core.metrics.scorer import GeneratedSet, Scorer

#: the columns of every sweep CSV, in order (a row's other keys are left out)
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
FLOOR_METRICS = ("dfid", "fid", "consistency_abs_rel")


@dataclass(frozen=True)
class SweepSeries:
    """One series: its CSV stem, scales (0 first), mode, window and guidance overrides."""

    name: str
    scales: list[float]
    mode: str
    window: list[float]
    overrides: dict[str, Any] | None = None


def series_name(mode: str, window: list[float] | tuple[float, float]) -> str:
    """File stem of one sweep series: ``<mode>_<lo>-<hi>`` (e.g. ``paper_0-0.6``)."""
    return f"{mode}_{float(window[0]):g}-{float(window[1]):g}"


def variant_name(text: str) -> str:
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


def sweep_series(
    modes: list[str],
    scales: list[float] | dict[str, list[float]],
    windows: list[list[float]],
    remedies: Mapping[str, Any],
) -> list[SweepSeries]:
    """Every series of a sweep: one per (mode, window), then one per remedy (first mode and
    window, its own scales and guidance overrides)."""
    series = [
        SweepSeries(series_name(mode, window), mode_scales(scales, mode), mode, window)
        for mode in modes
        for window in windows
    ]
    series += [
        SweepSeries(
            name,
            sorted({0.0, *(float(w) for w in remedy["scales"])}),
            modes[0],
            windows[0],
            remedy.get("guidance"),
        )
        for name, remedy in remedies.items()
    ]
    return series


def render_point(
    models: SynthesisModels,
    sampling: Mapping[str, Any],
    settings: dict[str, Any],
    name: str,
    directory: str | Path,
    *,
    batch_size: int,
    runtime: RuntimeConfig,
) -> Path:
    """Sample one sweep point as a whole one-shard dataset ``directory/<name>`` (the sampling
    settings of :class:`SynthesisSpec`, all ``num_samples`` in shard 0); returns its folder."""
    spec = SynthesisSpec(
        shard_size=sampling["num_samples"],
        variants={name: settings},
        runtime=runtime.result_record(),
        **sampling,
    )
    path = render_shard(
        models, spec, name, 0, Path(directory) / name, batch_size=batch_size, runtime=runtime
    )
    write_manifest(path.parent)  # a whole one-shard dataset, read back verified
    return path.parent


def run_sweep(
    score: Scorer,
    render: Callable[[dict[str, Any], str], GeneratedSet],
    guidance: dict[str, Any],
    series: list[SweepSeries],
    floor_pairs: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Score every point of every series; returns (rows per series, the unguided row).

    ``render(settings, name)`` samples one point's guidance settings with the sweep's seeds and
    returns its features. The unguided set (w = 0, rendered first) is every series' w = 0 row and
    the reference of every paired difference. ``floor_pairs`` (held-out real pairs, as many as
    the samples): their scores go into every row as ``floor_*`` columns.
    """
    base = render({"w_dc": 0.0, "w_dp": 0.0}, "w0")
    base_row, base_diff = score.summary(base, base)  # w = 0 of every series
    floor_cols: dict[str, float] = {}
    if floor_pairs is not None:
        floor_row, _ = score.summary(score.features(*floor_pairs))
        floor_cols = {f"floor_{k}": floor_row[k] for k in FLOOR_METRICS}
        log(f"sweep floor (held-out real, n={len(floor_pairs[0])}): {floor_cols}")
    rows_by_series: dict[str, list[dict[str, Any]]] = {}
    for s in series:
        rows = []
        for w in s.scales:
            if w == 0:
                row, diff = base_row, base_diff
            else:
                settings = point_settings(guidance, s.mode, s.window, w, s.overrides)
                gen = render(settings, variant_name(f"{s.name}-w{w:g}"))
                row, diff = score.summary(gen, base)
            rows.append({"w": w, **row, **(diff or {}), **floor_cols})
            log(
                f"sweep {s.name} w={w:g}: dFID {row['dfid']:.2f} [{row['dfid_ci_lo']:.2f}, "
                f"{row['dfid_ci_hi']:.2f}], consistency "
                f"{row.get('consistency_abs_rel', float('nan')):.4f}"
            )
        rows_by_series[s.name] = rows
    return rows_by_series, base_row


def write_sweep_csvs(out_dir: str | Path, series: Mapping[str, list[dict[str, Any]]]) -> Path:
    """One CSV ``<series>.csv`` per series in ``out_dir`` (columns :data:`COLUMNS`), each written
    atomically; then CSVs of series no longer swept are removed. A reader never finds the
    folder without a whole set of CSVs; other files in ``out_dir`` are left alone."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in series.items():
        with atomic_open(out / f"{name}.csv", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    for old in out.glob("*.csv"):
        if old.stem not in series:
            old.unlink()
    return out
