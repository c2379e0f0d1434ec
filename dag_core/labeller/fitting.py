"""Depth labellers to compare: what each is, and fitting one on a set of image–depth pairs.

A labeller maps uint8 images (B, H, W, 3) to depth in metres (B, h, w)
(:data:`dag_core.downstream.relabel.Labeller`) — what labels a synthetic dataset. Three kinds
(:class:`LabellerSpec`), each fitted on the same pairs:

* ``heads``: the trained heads folder (the stage ``train_heads`` output), not refitted;
* ``fit``: MLP-S / MLP-W fitted here on the frozen U-Net's features (paper, "Label-efficient
  training of depth predictors") with :class:`~dag_core.configs.heads.HeadConfig` overrides —
  another block set S, an ensemble, more steps;
* ``net``: the downstream :class:`~dag_core.downstream.model.DepthNet` trained from scratch on the
  pairs (no diffusion features: the baseline every labeller must beat).

Heads labellers may average d^S over timesteps and noise draws at test time
(:func:`dag_core.heads.labelling.average_label`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dag_core.configs.downstream import DownstreamConfig
from dag_core.configs.heads import HeadConfig
from dag_core.configs.labeller import LabellerSpec
from dag_core.depthnorm import DepthNorm


def fit_steps(steps: int, batch_size: int, n: int, min_epochs: float) -> int:
    """``steps``, raised so that ``n`` pairs are each seen ``min_epochs`` times on average."""
    return max(int(steps), math.ceil(min_epochs * n / batch_size))


def fit_labeller(
    spec: LabellerSpec,
    base: Any,
    train: str | Path,
    *,
    head_config: HeadConfig,
    net_config: DownstreamConfig,
    norm: DepthNorm,
    validation: str | Path | None,
    run: int = 0,
    min_epochs: float = 0.0,
    log: Callable[[str], None] = print,
) -> tuple[Callable[[Any], Any], float]:
    """Fit (or load) ``spec`` on the pairs in ``train``; returns (labeller, fit seconds).

    Run ``run`` adds ``run`` to the config's seed (runs differ in initial weights and batches);
    ``min_epochs`` raises the steps for a large ``train`` (:func:`fit_steps`). Nets choose their
    checkpoint on ``validation`` (held-out labelled pairs, never the test split).
    """
    from dag_core.downstream import predict_depth, train_depth_net
    from dag_core.downstream.data import count_pairs
    from dag_core.downstream.relabel import labeller_from_heads
    from dag_core.heads import DepthHeads, replacement_batches, train_heads
    from dag_core.shards import load_tensors

    start = time.perf_counter()
    if spec.kind == "heads":
        heads = DepthHeads.load(spec.heads).to(base.unet.device)
        heads.check_compatible(base.unet)
        return labeller_from_heads(base, heads, t_values=spec.t, draws=spec.draws), 0.0
    n = count_pairs([train])
    if spec.kind == "fit":
        cfg = HeadConfig.from_dict({**head_config.to_dict(), **spec.config})
        steps = fit_steps(cfg.steps, cfg.batch_size, n, min_epochs)
        cfg = HeadConfig.from_dict({**cfg.to_dict(), "seed": cfg.seed + run, "steps": steps})
        images, depth = load_tensors(train)
        heads, _ = train_heads(
            base.unet,
            base.scheduler,
            replacement_batches(images, depth, cfg.batch_size, cfg.seed),
            cfg,
            norm,
            log=log,
        )
        seconds = time.perf_counter() - start
        return labeller_from_heads(base, heads, t_values=spec.t, draws=spec.draws), seconds
    cfg = DownstreamConfig.from_dict({**net_config.to_dict(), **spec.config})
    steps = fit_steps(cfg.steps, cfg.batch_size, n, min_epochs)
    cfg = DownstreamConfig.from_dict({**cfg.to_dict(), "seed": cfg.seed + run, "steps": steps})
    model, _ = train_depth_net([train], cfg, norm, validation=validation, log=log)
    seconds = time.perf_counter() - start
    return (lambda rgb: predict_depth(model, rgb, norm, cfg.resolution)), seconds
