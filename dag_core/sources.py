"""Labelled image–depth sources for the label subset (paper: "~100 labelled image–depth pairs").

A source is a sized, indexable collection of :class:`~dag_core.shards.Sample` at the base model's
resolution:

* ``world``  — the procedural world (:mod:`dag_core.world`), rendered at the target resolution with
  exact metric depth; scene ``i`` is seed ``seed_base + i``.
* ``nyu``    — NYU-Depth v2, the official ``nyu_depth_v2_labeled.mat`` (+ ``splits.mat``) or the
  DenseDepth ``nyu2_test`` layout (:func:`dag_core.nyu.open_nyu`).
* ``folder`` — an image folder and a depth folder with matching file stems; depth as 16-bit PNG in
  millimetres or ``.npy`` in metres.

Real-data pairs are centre-cropped to a square and resized: RGB with antialiased bilinear
filtering, depth with nearest-neighbour sampling so every stored value is a measured one (no mixing
across depth edges, invalid zeros stay invalid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dag_core.errors import DagError
from dag_core.filechecks import check_depth_png, folder_pairs
from dag_core.shards import Sample

SOURCE_KINDS = ("world", "nyu", "folder")


def resize_pair(
    rgb: np.ndarray, depth: np.ndarray, resolution: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop to a square and resize to ``resolution``² (RGB antialiased, depth nearest)."""
    if rgb.shape[:2] != depth.shape[:2]:
        raise DagError(f"rgb shape {rgb.shape[:2]} and depth shape {depth.shape[:2]} differ")
    h, w = depth.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    rgb = rgb[top : top + side, left : left + side]
    depth = depth[top : top + side, left : left + side]
    if side == resolution:
        return np.ascontiguousarray(rgb), np.ascontiguousarray(depth, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    rgb_out = x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    d = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    d = F.interpolate(d, size=(resolution, resolution), mode="nearest-exact")
    return rgb_out, d[0, 0].numpy()


@dataclass
class WorldSource(Sequence[Sample]):
    """``size`` procedural-world scenes at ``resolution`` (scene i = seed ``seed_base + i``)."""

    resolution: int
    size: int = 1_000_000
    seed_base: int = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        from dag_core.world import render_one

        if not 0 <= i < self.size:
            raise IndexError(i)
        seed = self.seed_base + i
        rgb, depth = render_one(seed, self.resolution)
        return Sample(id=f"world-{seed:09d}", rgb=rgb, depth=depth, seed=seed, source="world")


@dataclass
class NyuSource(Sequence[Sample]):
    """NYU-Depth v2 pairs (``.mat`` file or DenseDepth folder), resized to ``resolution``."""

    path: str
    resolution: int
    split: str = "test"

    def __post_init__(self) -> None:
        from dag_core.nyu import open_nyu

        self._pairs = open_nyu(self.path, split=self.split)

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        pair = self._pairs[i]
        rgb, depth = resize_pair(pair.rgb, pair.depth, self.resolution)
        return Sample(id=f"nyu-{pair.id}", rgb=rgb, depth=depth, source="nyu")


@dataclass
class FolderSource(Sequence[Sample]):
    """Images in ``path`` and depth maps with the same stems in ``depth_dir``."""

    path: str
    depth_dir: str
    resolution: int

    def __post_init__(self) -> None:
        self._items: list[tuple[Path, Path]] = folder_pairs(self.path, self.depth_dir)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        img, dep = self._items[i]
        rgb = np.asarray(Image.open(img).convert("RGB"))
        if dep.suffix == ".npy":
            depth = np.load(dep).astype(np.float32)
        else:
            check_depth_png(dep)
            raw = np.asarray(Image.open(dep))
            valid = raw[raw > 0]
            if valid.size and int(valid.max()) <= 255:
                raise DagError(
                    f"depth PNG {dep} is 16-bit but every value is <= 255 (max {int(valid.max())}"
                    f" mm): that looks like 8-bit data, not millimetres; store depth in mm "
                    f"(uint16) or as .npy metres"
                )
            depth = raw.astype(np.float32) / 1000.0
        rgb, depth = resize_pair(rgb, depth, self.resolution)
        return Sample(id=f"folder-{img.stem}", rgb=rgb, depth=depth, source="folder")


def open_source(
    kind: str,
    resolution: int,
    *,
    path: str | None = None,
    depth_dir: str | None = None,
    split: str = "test",
    world_size: int = 1_000_000,
    world_seed_base: int = 0,
) -> Sequence[Sample]:
    """Open a labelled source by kind (see module docstring)."""
    if kind == "world":
        return WorldSource(resolution=resolution, size=world_size, seed_base=world_seed_base)
    if kind == "nyu":
        if not path:
            raise DagError("source 'nyu' needs path (nyu_depth_v2_labeled.mat or nyu2_test dir)")
        return NyuSource(path=path, resolution=resolution, split=split)
    if kind == "folder":
        if not path or not depth_dir:
            raise DagError("source 'folder' needs both path (images) and depth_dir")
        return FolderSource(path=path, depth_dir=depth_dir, resolution=resolution)
    raise DagError(f"unknown source kind '{kind}'; expected one of {', '.join(SOURCE_KINDS)}")


def split_indices(total: int, n: int, n_heldout: int, seed: int) -> tuple[list[int], list[int]]:
    """Deterministically pick ``n`` training and ``n_heldout`` held-out indices out of ``total``.

    The choice depends only on (total, seed): asking for fewer pairs gives a prefix of the same
    permutation, so a 10-image subset is contained in the 100-image one (paper Fig. 4b).
    """
    if n <= 0:
        raise DagError(f"label subset size n must be positive, got {n}")
    if n_heldout < 0:
        raise DagError(f"n_heldout must be >= 0, got {n_heldout}")
    if n + n_heldout > total:
        raise DagError(
            f"asked for n={n} + n_heldout={n_heldout} pairs but the source has only {total}"
        )
    rng = np.random.default_rng(seed)
    picked = rng.permutation(total)[: n + n_heldout].tolist()
    heldout = [int(i) for i in picked[:n_heldout]]
    train = [int(i) for i in picked[n_heldout:]]
    return train, heldout
