"""Re-label a shard dataset's images with another depth labeller (the downstream diagnostic).

A net trained on synthetic pairs can fall short of one trained on real pairs for two reasons:
the images (the generator's domain gap) or the labels (the depth heads' errors). Re-labelling
separates them at equal N and budget: the same synthetic images with a better labeller's depth,
and real images with the heads' depth. Two labellers are offered: :func:`heads_labeller` — MLP-S
at t = 0 on the frozen U-Net's features, exactly how synthesis labels its samples
(:func:`dag_core.sampling.final_label`) — and :func:`estimator_labeller` — a saved downstream
depth net, e.g. the reference estimator the dFID uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dag_core.depthnet import load_depth_net, predict_depth
from dag_core.errors import DagError
from dag_core.shards import Sample, read_samples, write_dataset

#: ``uint8 images (B, H, W, 3) -> depth in metres (B, h, w)``
Labeller = Callable[[np.ndarray], np.ndarray]


def heads_labeller(
    base_model: str | Path,
    heads: str | Path,
    device: str | torch.device = "cpu",
    *,
    t_values: Sequence[int] = (0,),
    draws: int = 1,
) -> Labeller:
    """The depth heads' labels: MLP-S at t = 0 on clean images, as synthesis stores them (or
    averaged over ``t_values`` × ``draws``: :func:`dag_core.heads.labelling.average_label`)."""
    from dag_core.backbone import load_base_model, model_hash
    from dag_core.heads import DepthHeads

    base = load_base_model(base_model, device=device)
    depth_heads = DepthHeads.load(heads).to(device).eval().requires_grad_(False)
    depth_heads.check_compatible(base.unet, base_hash=model_hash(base.unet))
    return labeller_from_heads(base, depth_heads, t_values=t_values, draws=draws)


def labeller_from_heads(
    base: Any, heads: Any, *, t_values: Sequence[int] = (0,), draws: int = 1
) -> Labeller:
    """:func:`heads_labeller` for a loaded base model (``.unet``, ``.scheduler``) and heads."""
    from dag_core.heads.labelling import average_label

    size = int(base.unet.config.sample_size)
    device = base.unet.device

    def label(rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[1:3] != (size, size):
            raise DagError(f"images are {rgb.shape[1:3]}, the base model takes {size}×{size}")
        x = torch.from_numpy(rgb).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = x.to(base.unet.dtype)
        depth = average_label(base.unet, base.scheduler, heads, x, t_values, draws)
        return depth[:, 0].float().cpu().numpy()

    return label


def estimator_labeller(directory: str | Path, device: str | torch.device = "cpu") -> Labeller:
    """A saved depth net's labels (e.g. ``models/reference_depth``), at the images' size."""
    model, config, norm = load_depth_net(directory)
    model.to(device)
    return lambda rgb: predict_depth(model, rgb, norm, config.resolution)


def _relabelled(
    samples: Iterator[Sample], label: Labeller, kind: str, batch_size: int
) -> Iterator[Sample]:
    while chunk := list(islice(samples, batch_size)):
        depth = label(np.stack([s.rgb for s in chunk]))
        for sample, d in zip(chunk, depth, strict=True):
            meta = {**sample.meta, "labels": kind}
            yield replace(sample, depth=np.asarray(d, np.float32), meta=meta, uncertainty=None)


def relabel_dataset(
    source: str | Path,
    out_dir: str | Path,
    label: Labeller,
    kind: str,
    *,
    limit: int | None = None,
    batch_size: int = 64,
) -> Path:
    """Write ``source``'s first ``limit`` rows (all: None) with depth from ``label`` into
    ``out_dir`` (a new shard dataset; ``meta["labels"] = kind``). Returns ``out_dir``."""
    samples = read_samples(source)
    if limit is not None:
        samples = islice(samples, limit)
    manifest = write_dataset(out_dir, _relabelled(samples, label, kind, batch_size))
    if limit is not None and manifest["total_rows"] < limit:
        raise DagError(f"limit {limit} exceeds the {manifest['total_rows']} rows of {source}")
    return Path(out_dir)
