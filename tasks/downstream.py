"""Tasks for stage ``downstream``: re-label, train and evaluate the depth nets (paths in, paths
out)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dag_core.atomic import replace_dir, write_text_atomic
from dag_core.configs.downstream import DownstreamConfig, TrainingSet
from dag_core.depthnorm import DepthNorm
from dag_core.downstream import (
    META_FILE,
    chosen_step,
    count_pairs,
    curve_rows,
    downstream_report,
    estimator_labeller,
    evaluate_training_sets,
    heads_labeller,
    note_unscored,
    relabel_dataset,
    save_depth_net,
    train_depth_net,
)
from dag_core.interrupt import work_thread
from dag_core.nyu import open_nyu
from dag_core.resumable import forget, mark_done
from dag_core.runtime import use_runtime
from dag_core.shards import read_samples
from tasks import run_logger, stage_task
from tasks.artifacts import Progress


@stage_task
def relabel_training_set(
    name: str,
    train_set: dict[str, Any],
    out_dir: str,
    base_model: str | None,
    heads: str | None,
    estimator: str | None,
    runtime: dict[str, Any] | None = None,
    done_key: str | None = None,
) -> str:
    """Write the set's images (its first ``limit`` rows) with depth from the heads or the
    reference estimator into ``out_dir`` (what an earlier, unfinished attempt left there is
    cleared first); with ``done_key``, record it as finished (:mod:`dag_core.resumable`);
    returns ``out_dir``."""
    ts = TrainingSet.from_params(train_set, f"train_sets.{name}")
    forget(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    _, device = use_runtime(runtime)
    if ts.labels == "heads":
        label = heads_labeller(str(base_model), str(heads), device)
    else:
        label = estimator_labeller(str(estimator), device)
    relabel_dataset(ts.data, out_dir, label, ts.labels, limit=ts.limit)
    if done_key is not None:
        mark_done(out_dir, done_key)
    run_logger().info("%s: %s re-labelled by the %s into %s", name, ts.data, ts.labels, out_dir)
    return out_dir


@stage_task
def fit_training_set(
    name: str,
    train_set: dict[str, Any],
    data: str,
    out_dir: str,
    config: dict[str, Any],
    norm: dict[str, Any],
    labelled: str | None,
    validation: str | None,
    runtime: dict[str, Any] | None = None,
    branch_to: str | None = None,
    branch_from: str | None = None,
    done_key: str | None = None,
) -> str:
    """Train one depth net on a training set (``data``: its pairs, re-labelled or not) in its
    regime, on the runtime device, and save it with a record of what it learnt from;
    ``branch_to`` / ``branch_from``: save or start from the branch-step state
    (:func:`~dag_core.downstream.train_depth_net`); with ``done_key``, record the net (and its
    branch state) as finished the moment it is saved (:mod:`dag_core.resumable`)."""
    ts = TrainingSet.from_params(train_set, f"train_sets.{name}")
    forget(out_dir)
    cfg = DownstreamConfig.from_params(config, "config")
    depth_norm = DepthNorm.from_dict(norm)
    rt, device = use_runtime(runtime)
    limit = None if ts.labels != "stored" else ts.limit  # re-labelled data is already cut

    def log(message: str) -> None:
        run_logger().info("%s: %s", name, message)

    key = f"downstream.train_sets.{name}.drop_uncertain"
    note_unscored([data], ts.drop_uncertain, key, run_logger().info)
    seed = cfg.seed
    with (
        work_thread(),  # Ctrl-C stops it in any thread
        rt.autocast(device),
        Progress(f"{name} seed {seed}: depth net steps", cfg.steps) as progress,
    ):
        model, rows = train_depth_net(
            [data],
            cfg,
            depth_norm,
            regime=ts.regime,
            labelled=[labelled] if labelled else None,
            validation=validation,
            limit=limit,
            drop_uncertain=ts.drop_uncertain,
            log=log,
            device=device,
            branch_to=branch_to,
            branch_from=branch_from,
            progress=progress,
        )
    pairs = count_pairs([data], limit, ts.drop_uncertain)
    record = {"name": name, **ts.to_dict(), "pairs": pairs, "kept": chosen_step(rows)}
    if ts.needs_labelled:
        record["labelled"] = labelled
    if validation:
        record["validation"] = validation
    with replace_dir(out_dir) as tmp:
        save_depth_net(model, cfg, depth_norm, tmp, training=record)
    if done_key is not None:
        mark_done(out_dir, done_key, [branch_to] if branch_to else [])
    run_logger().info("%s: net saved in %s", name, out_dir)
    return out_dir


def _world_test_pairs(directory: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(s.rgb, s.depth) for s in read_samples(directory, columns=["rgb", "depth"])]


def _set_info(model_dir: str) -> dict[str, Any]:
    """What a net learnt from, from its saved record (first run of the set)."""
    record = json.loads((Path(model_dir) / META_FILE).read_text()).get("training", {})
    keys = ("data", "regime", "labels", "pairs", "limit", "drop_uncertain")
    return {k: record.get(k) for k in keys}


@stage_task
def evaluate_training_nets(
    models: dict[str, list[str]],
    world_test: str,
    nyu_path: str | None,
    nyu_median_scaling: bool,
    comparisons: list[list[str]],
    diagnostic: list[str],
    curves: dict[str, dict[int, str]],
    n_boot: int,
    metrics_file: str,
    table_file: str,
    curve_dir: str,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Evaluate every net on the world test split (and NYU-Depth v2 with ``nyu_path``); write
    the metrics record, the Markdown tables and one AbsRel-vs-N CSV per curve (atomically)."""
    logger = run_logger()
    _, device = use_runtime(runtime)
    splits: dict[str, tuple[Any, dict[str, Any]]] = {"world": (_world_test_pairs(world_test), {})}
    if nyu_path:
        splits["nyu"] = (
            open_nyu(nyu_path),
            {"eigen_crop": True, "median_scaling": nyu_median_scaling},
        )
    results, per_image, runs = evaluate_training_sets(
        models, splits, device=device, log=logger.info
    )
    sets = {name: _set_info(dirs[0]) for name, dirs in models.items()}
    results, table = downstream_report(
        results,
        per_image,
        sets=sets,
        comparisons=[(a, b) for a, b in comparisons],
        diagnostic=diagnostic,
        n_boot=n_boot,
        runs=runs,
    )
    curve_files = {}
    for name, points in curves.items():
        rows = curve_rows(points, per_image["world"], n_boot=n_boot)
        results.setdefault("curves", {})[name] = rows
        header = list(rows[0])
        text = ",".join(header) + "\n"
        text += "".join(",".join(f"{row[k]:.6g}" for k in header) + "\n" for row in rows)
        curve_files[f"{name}.csv"] = text
    write_text_atomic(metrics_file, json.dumps(results, indent=2) + "\n")
    write_text_atomic(table_file, table)
    with replace_dir(curve_dir) as tmp:
        for filename, text in curve_files.items():
            (tmp / filename).write_text(text)
    return metrics_file
