"""Deterministic bilinear resizes: ``F.interpolate`` as two fixed matrix products.

The backward of ``F.interpolate(mode="bilinear")`` (with or without antialias) accumulates with
atomics on CUDA and has no deterministic kernel — it is what made DAG shards differ run to run.
A bilinear resize is linear and separable, so it equals ``Mh^T · X · Mw`` for two fixed matrices
built once from ``F.interpolate`` itself on the identity (:func:`resize_matrix`); matrix products
and their gradients are deterministic in cuBLAS for a fixed GPU model, library version and batch
size. ``runtime.deterministic`` (:class:`~dag_core.runtime.RuntimeConfig`) selects these resizes
for the heads' feature upsampling and the prior's input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=128)
def _matrix_cpu(n_in: int, n_out: int, antialias: bool) -> Tensor:
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, 1, n_in)
    out = F.interpolate(
        eye, size=(1, n_out), mode="bilinear", align_corners=False, antialias=antialias
    )
    return out.reshape(n_in, n_out)


def resize_matrix(
    n_in: int, n_out: int, *, antialias: bool, device: torch.device | str, dtype: torch.dtype
) -> Tensor:
    """M (n_in, n_out) with ``x @ M`` = 1-D bilinear resize of the last axis of ``x``, exactly as
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=antialias)`` weighs it."""
    return _matrix_cpu(int(n_in), int(n_out), bool(antialias)).to(device=device, dtype=dtype)


def matrix_resize(x: Tensor, size: int | Sequence[int], *, antialias: bool = False) -> Tensor:
    """Bilinear resize of (…, H, W) to ``size`` as two matrix products (deterministic backward).

    Equal (up to float rounding) to ``F.interpolate(x, size, mode="bilinear",
    align_corners=False, antialias=antialias)``.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == (h, w):
        return x
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    mh = resize_matrix(x.shape[-2], h, antialias=antialias, device=x.device, dtype=dtype)
    mw = resize_matrix(x.shape[-1], w, antialias=antialias, device=x.device, dtype=dtype)
    return torch.matmul(mh.T, torch.matmul(x.to(dtype), mw))


def upsample_concat_matrix(features: Sequence[Tensor], size: int) -> Tensor:
    """:func:`dag_core.features.upsample_concat` with :func:`matrix_resize` (deterministic)."""
    return torch.cat([matrix_resize(f, size) for f in features], dim=1)


def make_resize(deterministic: bool) -> Callable[[Tensor, int], Tensor]:
    """The antialiased bilinear resize used before the depth prior: ``F.interpolate`` (default)
    or its deterministic matrix form."""
    if deterministic:
        return lambda x, r: matrix_resize(x, r, antialias=True)
    return lambda x, r: F.interpolate(
        x, size=(r, r), mode="bilinear", align_corners=False, antialias=True
    )
