"""Where the labeller stands: every labeller scored on one exact-depth test split, with CIs.

The synthetic pairs inherit their labeller's error, so the record answers three questions on the
same test images (the world test split: exact depth, never used for a choice):

* how each labeller (:class:`~dag_core.labeller.fitting.LabellerSpec`) scores, with its fit time;
  fitted labellers are fitted ``runs`` times and their per-image metrics stacked (runs × images);
* the paired difference of each against a reference labeller (a bootstrap CI over runs × images,
  :func:`dag_core.downstream.evaluation.compare_sets`);
* the ceiling of the features: labellers refitted on N exactly labelled world pairs (fresh
  scenes), N = 100 … 3,000. If the best head at N = 3,000 is not clearly better than a net on
  100 pairs, the features limit the labeller, not the label count.

Every (labeller, N, run) is a unit kept in ``work`` (:mod:`dag_core.resumable`): a stopped record
resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dag_core.atomic import replace_dir
from dag_core.configs.downstream import DownstreamConfig
from dag_core.configs.heads import HeadConfig
from dag_core.configs.labeller import LabellerSpec, check_specs
from dag_core.depthnorm import DepthNorm
from dag_core.labeller.fitting import fit_labeller
from dag_core.metrics.depth import DepthMetricAccumulator
from dag_core.resumable import input_digest, is_done, mark_done, unit_key

#: first world scene of the ceiling's exactly labelled pairs (disjoint from the label subset
#: < 1e6, the prior's 50e6…, the reference sets' 100e6…)
CEILING_SEED_BASE = 150_000_000
METRICS = ("abs_rel", "delta1")


def score_labeller(
    label: Callable[[np.ndarray], np.ndarray], rgb: np.ndarray, depth: np.ndarray, batch: int = 64
) -> dict[str, np.ndarray]:
    """Per-image depth metrics of ``label`` on uint8 images (N, H, W, 3) against depth (N, h, w)."""
    acc = DepthMetricAccumulator()
    for start in range(0, len(rgb), batch):
        acc.update(label(rgb[start : start + batch]), depth[start : start + batch])
    return acc.per_image()


def exact_world_pairs(directory: Path, n: int, resolution: int) -> Path:
    """The first ``n`` ceiling scenes with their exact depth, as a shard dataset."""
    from dag_core.shards import Sample, write_dataset
    from dag_core.world import iter_scenes

    samples = (
        Sample(id=f"world-{s:09d}", rgb=rgb, depth=d, seed=s, source="world")
        for s, rgb, d in iter_scenes(CEILING_SEED_BASE, n, resolution)
    )
    with replace_dir(directory) as tmp:
        write_dataset(tmp, samples, shard_size=1000, depth_dtype="float32")
    return directory


def _unit(
    work: Path,
    name: str,
    n: int | None,
    run: int,
    key: str,
    fit: Callable[[], tuple[Callable[[np.ndarray], np.ndarray], float]],
    test: tuple[np.ndarray, np.ndarray],
    log: Callable[[str], None],
) -> tuple[dict[str, np.ndarray], float]:
    """One (labeller, N, run): its per-image test metrics and fit seconds, kept in ``work``."""
    folder = work / f"{name}-n{n or 'labelled'}-run{run}"
    if not is_done(folder, key):
        label, seconds = fit()
        per_image = score_labeller(label, *test)
        with replace_dir(folder) as tmp:
            np.savez(tmp / "per_image.npz", **{m: per_image[m] for m in METRICS})
            (tmp / "fit.json").write_text(json.dumps({"fit_seconds": round(seconds, 1)}) + "\n")
        mark_done(folder, key)
        log(
            f"labeller {name} (N={n or 'labelled'}, run {run}): "
            f"AbsRel {per_image['abs_rel'].mean():.4f}, fit {seconds:.0f} s"
        )
    with np.load(folder / "per_image.npz") as data:
        per_image = {m: data[m] for m in METRICS}
    return per_image, float(json.loads((folder / "fit.json").read_text())["fit_seconds"])


def labeller_record(
    specs: Mapping[str, LabellerSpec],
    *,
    base: Any,
    base_model: str,
    train: str | Path,
    validation: str | Path,
    test: str | Path,
    head_config: HeadConfig,
    net_config: DownstreamConfig,
    norm: DepthNorm,
    reference: str,
    runs: int,
    ceiling_n: Sequence[int],
    ceiling_labellers: Sequence[str],
    min_epochs: float,
    ceiling_runs: int = 1,
    n_boot: int,
    work: Path,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, float]]:
    """(The record, fit times): each labeller's test metrics, paired differences against
    ``reference``, and (``ceiling_n``) the ceiling rows, ``ceiling_runs`` fits each; the mean
    fit seconds per labeller (``name`` and ``name@N``) apart, since they are not reproducible.
    ``work``: the resume folder."""
    from dag_core.downstream.evaluation import compare_sets
    from dag_core.shards import read_arrays

    check_specs(specs, [reference], "labellers.reference")
    check_specs(specs, ceiling_labellers, "labellers.ceiling.labellers")
    rgb, depth = read_arrays(test)
    assert depth is not None
    inputs = [input_digest(p) for p in (base_model, train, validation, test)]
    common = {
        "head_config": head_config.to_dict(),
        "net_config": net_config.to_dict(),
        "norm": norm.to_dict(),
        "inputs": inputs,
    }

    def run_set(
        name: str, n: int | None, data: str | Path, runs: int = runs
    ) -> tuple[dict[str, np.ndarray], float]:
        spec = specs[name]
        per_run, seconds = [], []
        for run in range(runs if spec.fitted else 1):
            key = unit_key(
                {
                    **common,
                    "spec": spec.__dict__,
                    "n": n,
                    "run": run,
                    "data": input_digest(data),
                    "min_epochs": min_epochs if n else 0.0,
                    "heads": input_digest(spec.heads) if spec.heads else None,
                }
            )

            def fit(run: int = run) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
                return fit_labeller(
                    spec,
                    base,
                    data,
                    head_config=head_config,
                    net_config=net_config,
                    norm=norm,
                    validation=validation,
                    run=run,
                    min_epochs=min_epochs if n else 0.0,
                    log=log,
                )

            values, secs = _unit(work, name, n, run, key, fit, (rgb, depth), log)
            per_run.append(values)
            seconds.append(secs)
        stacked = {m: np.stack([v[m] for v in per_run]) for m in METRICS}
        if len(per_run) < runs:  # a fixed labeller: the same labels every run
            stacked = {m: np.repeat(v, runs, axis=0) for m, v in stacked.items()}
        return stacked, float(np.mean(seconds))

    per_image: dict[str, dict[str, np.ndarray]] = {}
    labellers: dict[str, dict[str, Any]] = {}
    times: dict[str, float] = {}
    for name, spec in specs.items():
        per_image[name], times[name] = run_set(name, None, train)
        labellers[name] = {
            "kind": spec.kind,
            **{k: v for m in METRICS for k, v in _mean(per_image[name][m], m, n_boot).items()},
            "runs": runs if spec.fitted else 1,
        }
    comparisons = compare_sets(
        per_image, [(name, reference) for name in specs if name != reference], n_boot=n_boot
    )
    ceiling = []
    for n in ceiling_n:
        data = work / f"world-{n}"
        data_key = unit_key({"n": n, "resolution": int(rgb.shape[1]), "base": CEILING_SEED_BASE})
        if not is_done(data, data_key):
            exact_world_pairs(data, n, int(rgb.shape[1]))
            mark_done(data, data_key)
        for name in ceiling_labellers:
            values, times[f"{name}@{n}"] = run_set(name, n, data, ceiling_runs)
            ceiling.append(
                {
                    "labeller": name,
                    "n": n,
                    "runs": ceiling_runs,
                    **_mean(values["abs_rel"], "abs_rel", n_boot),
                    **_mean(values["delta1"], "delta1", n_boot),
                }
            )
    return {
        "test": {"path": str(test), "count": len(rgb)},
        "train": {"path": str(train), "validation": str(validation)},
        "runs": runs,
        "reference": reference,
        "labellers": labellers,
        "comparisons": comparisons,
        "ceiling": ceiling,
    }, times


def _mean(values: np.ndarray, metric: str, n_boot: int) -> dict[str, float]:
    """A labeller's mean per-image ``metric`` with its 95 % CI (over runs × images)."""
    from dag_core.metrics.effect import mean_bootstrap

    interval = mean_bootstrap(values, n_boot=n_boot)
    return interval.as_dict(metric)
