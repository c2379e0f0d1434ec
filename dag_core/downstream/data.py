"""Training data for the downstream depth network: shard datasets as square, shuffled batches.

Each sample is resized so its short side is ``resolution`` and centre-cropped to a
``resolution × resolution`` square (depth resized with a validity mask, so holes stay holes); the
stream is shuffled with a seeded buffer and re-shuffled every pass (:class:`ShuffledCycle`).
:func:`pair_stream` builds such a stream over several datasets (optionally their first N rows,
optionally without the most uncertain rows); :func:`square_pairs` loads a small set (validation)
into memory the same way.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.shards import ShardDataset
from dag_core.shards.integrity import read_manifest

SHUFFLE_BUFFER = 512
_LOG = logging.getLogger(__name__)


def resize_pair(image: Tensor, depth: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Resize an image (…, 3, H, W) bilinearly and its depth (…, 1, H, W) with a validity mask.

    Depth is averaged over valid pixels only; output pixels with less than half valid support are
    0 (invalid), so sensor holes are neither filled nor smeared into the labels.
    """
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    valid = DepthNorm.valid(depth).to(depth.dtype)
    depth = torch.where(valid > 0, depth, torch.zeros_like(depth))
    kw: dict[str, Any] = {"size": size, "mode": "bilinear", "align_corners": False}
    num = F.interpolate(depth * valid, antialias=True, **kw)
    den = F.interpolate(valid, antialias=True, **kw)
    depth = torch.where(den > 0.5, num / den.clamp_min(1e-6), torch.zeros_like(num))
    return image, depth


def square_transform(resolution: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """ShardDataset transform: short side → ``resolution``, centre crop to a square."""

    def transform(item: dict[str, Any]) -> dict[str, Any]:
        image, depth = item["image"], item["depth"]
        h, w = image.shape[-2:]
        if (h, w) != (resolution, resolution):
            scale = resolution / min(h, w)
            size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
            image, depth = resize_pair(image[None], depth[None], size)
            top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
            crop = (..., slice(top, top + resolution), slice(left, left + resolution))
            image, depth = image[0][crop], depth[0][crop]
        return {"image": image.contiguous(), "depth": depth.contiguous()}

    return transform


class ShuffledCycle(torch.utils.data.IterableDataset):
    """Endless stream over ``dataset``, shuffled per pass with a seeded buffer."""

    def __init__(self, dataset: torch.utils.data.IterableDataset, seed: int, buffer: int) -> None:
        super().__init__()
        self.dataset, self.seed, self.buffer = dataset, seed, buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for epoch in itertools.count():
            rng = random.Random(self.seed * 1_000_003 + epoch)
            pool: list[dict[str, Any]] = []
            seen = 0
            for item in self.dataset:
                seen += 1
                pool.append(item)
                if len(pool) >= self.buffer:
                    yield pool.pop(rng.randrange(len(pool)))
            if not seen:
                raise DagError("training data yielded no samples")
            rng.shuffle(pool)
            yield from pool


class FirstN(torch.utils.data.IterableDataset):
    """The first ``n`` items of ``dataset`` (its row order), every pass."""

    def __init__(self, dataset: torch.utils.data.IterableDataset, n: int) -> None:
        super().__init__()
        self.dataset, self.n = dataset, n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return itertools.islice(iter(self.dataset), self.n)


def _open(dirs: Sequence[str | Path], resolution: int, drop_uncertain: float) -> list[ShardDataset]:
    transform = square_transform(resolution)
    if drop_uncertain:
        return [ShardDataset(d, transform=transform, drop_uncertain=drop_uncertain) for d in dirs]
    return [ShardDataset(d, transform=transform) for d in dirs]


def pair_stream(
    dirs: Sequence[str | Path],
    resolution: int,
    seed: int,
    limit: int | None = None,
    drop_uncertain: float = 0.0,
) -> tuple[Callable[[int], Iterator[dict[str, Tensor]]], int]:
    """Endless square, shuffled batches from the datasets in ``dirs`` (concatenated).

    Returns ``(batches, n)``: ``batches(batch_size)`` starts a stream of ``{"image", "depth",
    ...}`` batches (a :class:`ShuffledCycle` seeded ``seed`` through a single-process
    DataLoader), and ``n`` is the number of pairs it cycles over. ``limit`` keeps the first
    ``limit`` rows (DagError if there are fewer); ``drop_uncertain`` is applied first.
    """
    datasets = _open(dirs, resolution, drop_uncertain)
    chained: torch.utils.data.IterableDataset = torch.utils.data.ChainDataset(datasets)
    n = sum(len(d) for d in datasets)
    if limit is not None:
        if limit > n:
            where = ", ".join(str(d) for d in dirs)
            raise DagError(f"limit {limit} exceeds the {n} rows of {where}")
        chained, n = FirstN(chained, limit), limit

    def batches(batch_size: int) -> Iterator[dict[str, Tensor]]:
        stream = ShuffledCycle(chained, seed, SHUFFLE_BUFFER)
        # its own generator: the loader's seed draw leaves the global RNG to other threads
        generator = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            stream, batch_size=batch_size, num_workers=0, generator=generator
        )
        return iter(loader)

    return batches, n


def note_unscored(
    dirs: Sequence[str | Path],
    drop_uncertain: float,
    key: str = "drop_uncertain",
    log: Callable[[str], None] = _LOG.info,
) -> list[str]:
    """Say, one ``log`` line per dataset, where ``drop_uncertain`` > 0 drops nothing because the
    dataset has no uncertainty scores (schema version 1, written before the column): every row
    is kept, as documented, but not silently. ``key``: the setting's dotted key, for the line
    (``downstream.train_sets.<name>.drop_uncertain``). Returns the lines."""
    lines = []
    if not drop_uncertain:
        return lines
    for directory in dirs:
        manifest = read_manifest(Path(directory))
        if manifest is not None and manifest.get("schema_version") == 1:
            lines.append(
                f"{key}={drop_uncertain!r}: {directory} has no uncertainty scores (schema 1); "
                "every row kept"
            )
            log(lines[-1])
    return lines


def count_pairs(
    dirs: Sequence[str | Path], limit: int | None = None, drop_uncertain: float = 0.0
) -> int:
    """How many pairs :func:`pair_stream` cycles over for the same arguments."""
    n = sum(len(d) for d in _open(dirs, 1, drop_uncertain))
    return n if limit is None else min(n, limit)


def square_pairs(directory: str | Path, resolution: int) -> tuple[Tensor, Tensor]:
    """A small dataset's square pairs in memory: images (N, 3, r, r), depth (N, 1, r, r)."""
    items = list(_open([directory], resolution, 0.0)[0])
    if not items:
        raise DagError(f"no pairs in {directory}")
    return torch.stack([i["image"] for i in items]), torch.stack([i["depth"] for i in items])
