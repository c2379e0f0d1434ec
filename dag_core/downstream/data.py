"""Training data for the downstream depth network: shard datasets as square, shuffled batches.

Each sample is resized so its short side is ``resolution`` and centre-cropped to a
``resolution × resolution`` square (depth resized with a validity mask, so holes stay holes); the
stream is shuffled with a seeded buffer and re-shuffled every pass (:class:`ShuffledCycle`).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError

SHUFFLE_BUFFER = 512


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
