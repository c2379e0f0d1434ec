"""Tasks for stages ``train_heads`` and ``probe_heads`` (paper: label-efficient depth heads)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import torch

from dag_core.atomic import atomic_open, replace_dir, write_text_atomic
from dag_core.backbone import load_base_model, model_hash
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.heads import DepthHeads, HeadConfig, replacement_batches, train_heads
from dag_core.probe import (
    accuracy_at_head_resolution,
    accuracy_vs_t,
    mean_depth_baseline,
    plot_probes,
    probe_layers,
    probe_num_images,
)
from dag_core.resumable import input_digest, training_snapshot
from dag_core.runtime import use_runtime
from dag_core.shards import load_tensors
from tasks import config_from_params, run_logger, stage_task

#: the fit's wall time in the heads folder (listed in .dvcignore: not part of the output's hash)
TRAIN_TIME_FILE = "train_time.json"


def head_config(config: dict[str, Any]) -> HeadConfig:
    return config_from_params(HeadConfig, config, "head")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Rows as a CSV (header: the first row's keys), written atomically."""
    with atomic_open(path, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@stage_task
def fit_heads(
    base_model: str,
    labelled: str,
    out_dir: str,
    config: dict[str, Any],
    norm: dict[str, Any],
    runtime: dict[str, Any] | None = None,
) -> str:
    """Train MLP-S and MLP-W on the labelled pairs (on the runtime device); write
    heads.safetensors + heads.json, the per-step train_log.csv and the fit's wall time.

    The wall time goes to ``train_time.json`` ({"train_seconds", "steps", "ensemble",
    "threads", "device"}), a file .dvcignore keeps out of the folder's DVC hash: the heads stay
    a reproducible output (no needless reruns downstream) and metrics/heads.json reproducible
    byte for byte, while the time is still there to read (not restored by ``dvc checkout``)."""
    logger = run_logger()
    cfg = head_config(config)
    depth_norm = DepthNorm.from_dict(norm)
    rt, device = use_runtime(runtime)
    base = load_base_model(base_model, device=device)
    rt.prepare(base.unet, device)
    images, depth = load_tensors(Path(labelled) / "train")
    if images.shape[-1] != base.resolution:
        raise DagError(
            f"labelled images in {labelled} are {images.shape[-1]}px but the base model "
            f"expects {base.resolution}px"
        )
    start = time.perf_counter()
    key = {
        "config": cfg.to_dict(),
        "norm": depth_norm.to_dict(),
        "inputs": [input_digest(base_model), input_digest(labelled)],
        "runtime": runtime,
    }
    with training_snapshot(out_dir, key, cfg.steps, "heads") as snapshot:
        with rt.autocast(device):
            heads, log_rows = train_heads(
                base.unet,
                base.scheduler,
                replacement_batches(images, depth, cfg.batch_size, cfg.seed),
                cfg,
                depth_norm,
                base_hash=model_hash(base.unet),
                log=logger.info,
                snapshot=snapshot,
            )
        timing = {
            "train_seconds": round(time.perf_counter() - start, 1),
            "steps": cfg.steps,
            "ensemble": cfg.ensemble,
            "threads": torch.get_num_threads(),
            "device": str(device),
        }
        logger.info("trained the heads in %.1f s (%s)", timing["train_seconds"], timing)
        with replace_dir(out_dir) as tmp:
            heads.save(tmp)
            write_csv(tmp / "train_log.csv", log_rows)
            write_text_atomic(tmp / TRAIN_TIME_FILE, json.dumps(timing, indent=2) + "\n")
    return out_dir


@stage_task
def evaluate_heads(
    base_model: str,
    labelled: str,
    heads_dir: str,
    t_values: list[int],
    metrics_file: str,
    plots_file: str,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Held-out AbsRel / δ<1.25 of MLP-S and MLP-W vs t, and the mean-depth baseline; with an
    ensemble of K > 1 strong heads, ``members`` holds each member's scores at the first t (the
    ``strong`` entry is their mean, the d^S guidance and labels use)."""
    rt, device = use_runtime(runtime)
    base = load_base_model(base_model, device=device)
    heads = DepthHeads.load(heads_dir)
    heads.check_compatible(base.unet, base_hash=model_hash(base.unet))
    train_images, train_depth = load_tensors(Path(labelled) / "train")
    held_images, held_depth = load_tensors(Path(labelled) / "heldout")
    with rt.autocast(device):
        rows = accuracy_vs_t(base.unet, base.scheduler, heads, (held_images, held_depth), t_values)
    baseline = mean_depth_baseline(train_depth, (held_images, held_depth))
    write_csv(plots_file, rows)
    t0 = min(t_values)
    best = {r["branch"]: r for r in rows if r["t"] == t0}
    metrics = {
        "t": t0,
        "strong": {k: best["strong"][k] for k in ("abs_rel", "delta1")},
        "weak": {k: best["weak"][k] for k in ("abs_rel", "delta1")},
        "mean_depth_baseline": {k: baseline[k] for k in ("abs_rel", "delta1")},
        "n_train": int(train_images.shape[0]),
        "n_heldout": int(held_images.shape[0]),
    }
    if heads.config.ensemble > 1:
        metrics["members"] = [
            {k: best[f"strong_{m}"][k] for k in ("abs_rel", "delta1")}
            for m in range(heads.config.ensemble)
        ]
    if rt.head_resolution is not None and rt.head_resolution < heads.resolution:
        # the guidance lever's cost in depth accuracy, same held-out pairs, noise and t
        with rt.autocast(device):
            low = accuracy_at_head_resolution(
                base.unet,
                base.scheduler,
                heads,
                (held_images, held_depth),
                [t0],
                rt.head_resolution,
            )
        metrics["at_head_resolution"] = {
            "resolution": rt.head_resolution,
            **{r["branch"]: {k: r[k] for k in ("abs_rel", "delta1")} for r in low},
        }
    write_text_atomic(metrics_file, json.dumps(metrics, indent=2) + "\n")
    run_logger().info("heads at t=%d: %s", t0, metrics)
    return metrics_file


@stage_task
def run_probes(
    base_model: str,
    labelled: str,
    t: int,
    layers: list[int] | None,
    ns: list[int],
    config: dict[str, Any],
    norm: dict[str, Any],
    heads_dir: str,
    t_values: list[int],
    out_dir: str,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Paper Fig. 4: accuracy per decoder layer, per number of labelled images, and vs t."""
    logger = run_logger()
    rt, device = use_runtime(runtime)
    base = load_base_model(base_model, device=device)
    rt.prepare(base.unet, device)
    cfg = head_config(config)
    depth_norm = DepthNorm.from_dict(norm)
    train = load_tensors(Path(labelled) / "train")
    held = load_tensors(Path(labelled) / "heldout")
    heads = DepthHeads.load(heads_dir)
    with rt.autocast(device):
        layer_rows = probe_layers(
            base.unet, base.scheduler, train, held, depth_norm, layers=layers, t=t, config=cfg
        )
        ns = [n for n in ns if n <= train[0].shape[0]]
        n_rows = probe_num_images(
            base.unet,
            base.scheduler,
            train,
            held,
            depth_norm,
            ns=ns,
            t=t,
            config=cfg,
            blocks=heads.config.strong_blocks,
        )
        t_rows = accuracy_vs_t(base.unet, base.scheduler, heads, held, t_values)
    out = Path(out_dir)
    write_csv(out / "layers.csv", layer_rows)
    write_csv(out / "num_images.csv", n_rows)
    write_csv(out / "vs_t.csv", t_rows)
    plot_probes(layer_rows, n_rows, t_rows, out / "probes.png")
    best = min(layer_rows, key=lambda r: r["abs_rel"])
    logger.info("best single decoder layer: %s", best)
    return out_dir
