"""Guidance strength calibration: the sweep's design, its loop and its CSVs (paper Fig. 8).

A sweep samples the same ``num_samples`` seeds at every point w = w_dc = w_dp of every
(scale mode, guidance window) series, plus named *remedy* series with other guidance settings on
the first mode and window, so each guided set is compared with the unguided one (w = 0, shared by
every series) sample by sample (:class:`~dag_core.metrics.scorer.Scorer`). Each series becomes one
CSV with the columns :data:`COLUMNS` (:func:`write_sweep_csvs`). Which points there are and the
checks of a design are torch-free, in :mod:`dag_core.configs.sweep` (re-exported here).
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
from dag_core.configs.sweep import (
    check_remedies,
    check_sweep,
    mode_scales,
    point_settings,
    remedy_settings,
    series_name,
)
from dag_core.runtime import RuntimeConfig
from dag_core.shards import write_manifest
from dag_core.synthesis import SynthesisModels, SynthesisSpec, render_shard

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
__all__ = [
    "COLUMNS",
    "FLOOR_METRICS",
    "SweepSeries",
    "check_remedies",
    "check_sweep",
    "mode_scales",
    "point_settings",
    "remedy_settings",
    "render_point",
    "run_sweep",
    "series_name",
    "sweep_series",
    "variant_name",
    "write_sweep_csvs",
]


@dataclass(frozen=True)
class SweepSeries:
    """One series: its CSV stem, scales (0 first), mode, window and guidance overrides."""

    name: str
    scales: list[float]
    mode: str
    window: list[float]
    overrides: dict[str, Any] | None = None


def variant_name(text: str) -> str:
    """A plain folder name for one sweep point (``paper_0-0.6-w0.3`` → ``paper_0-0_6-w0_3``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


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
