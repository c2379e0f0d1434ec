"""Label uncertainty: how sure the depth heads are of a synthesized depth label.

DAG (Kim et al., arXiv 2212.08861) labels each generated image with the strong head's depth d^S at
t = 0. Its own depth consistency term is a per-pixel disagreement between the strong and weak
heads, ‖d^S − d^W‖ (paper Eq. 6) — a ready-made uncertainty signal. ddpm-segmentation (Baranchuk
et al., "Label-Efficient Semantic Segmentation with Diffusion Models", ICLR 2022) uses the
disagreement of an ensemble of pixel MLPs instead, scores each generated image by the mean of its
10 % most uncertain pixels, and drops the most uncertain 10–25 % of the images before training.

* :func:`pixel_uncertainty` — per pixel, in the heads' normalised depth space
  (:mod:`dag_core.depthnorm`): u = |d^S − d^W| for a single strong head, or the standard deviation
  of the K strong members (population form, over the K maps) for an ensemble
  (``HeadConfig.ensemble`` > 1);
* :func:`top_fraction_mean` — the per-image score: the mean of the top 10 % of u
  (``floor(0.1 · pixels)`` of them, at least one — ddpm-segmentation's ``int(n / 10)``).

Synthesis computes both from the same U-Net forward that gives the label
(:func:`dag_core.sampling.final_label`) and stores the score in every row's ``uncertainty``
column (:mod:`dag_core.shards`); readers can drop the most uncertain rows (``drop_uncertain``).
A label with a non-finite pixel scores +inf (dropped first).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dag_core.errors import DagError

#: the fraction of most uncertain pixels averaged into the per-image score (ddpm-segmentation)
TOP_FRACTION = 0.1


def pixel_uncertainty(d_strong: Tensor, d_weak: Tensor, members: Tensor | None = None) -> Tensor:
    """Per-pixel uncertainty (B, 1, R, R) of normalised depth maps, as float32.

    ``members`` (K, B, 1, R, R), the strong ensemble's maps: their standard deviation over K
    (``correction=0``); without it (a single strong head) |d^S − d^W|.
    """
    if members is not None and members.shape[0] > 1:
        if tuple(members.shape[1:]) != tuple(d_strong.shape):
            raise DagError(
                f"ensemble maps {tuple(members.shape)} do not match d^S {tuple(d_strong.shape)}"
            )
        return members.float().std(dim=0, correction=0)
    if d_strong.shape != d_weak.shape:
        raise DagError(
            f"strong and weak depth shapes differ: {tuple(d_strong.shape)} vs {tuple(d_weak.shape)}"
        )
    return (d_strong.float() - d_weak.float()).abs()


def top_fraction_mean(u: Tensor, fraction: float = TOP_FRACTION) -> Tensor:
    """Per-sample mean of the ``floor(fraction · pixels)`` (at least 1) largest values of ``u``
    (B, ...) → (B,) float32; +inf for a sample with any non-finite value."""
    if not 0 < fraction <= 1:
        raise DagError(f"fraction must be in (0, 1], got {fraction}")
    flat = u.float().flatten(1)
    k = max(1, math.floor(fraction * flat.shape[1]))
    finite = torch.isfinite(flat).all(dim=1)
    top = flat.nan_to_num(0.0).topk(k, dim=1).values.mean(dim=1)
    return torch.where(finite, top, torch.full_like(top, math.inf))


def label_uncertainty(d_strong: Tensor, d_weak: Tensor, members: Tensor | None = None) -> Tensor:
    """The per-sample score (B,) of a batch of labels: :func:`top_fraction_mean` of
    :func:`pixel_uncertainty`."""
    return top_fraction_mean(pixel_uncertainty(d_strong, d_weak, members))
