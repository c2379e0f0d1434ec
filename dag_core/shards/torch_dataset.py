"""Shard datasets as torch data: a streaming ``IterableDataset`` and small in-memory tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from dag_core.shards.codec import row_sample
from dag_core.shards.readers import dataset_shards, iter_batches


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream a shard dataset as dicts for a torch DataLoader.

    Yields ``{"id": str, "image": float32 (3, H, W) in [-1, 1], "depth": float32 (1, H, W) metres,
    "seed": int}`` (``seed`` is -1 when the sample has none, so ``default_collate`` works), passed
    through ``transform`` if given. Shards are split across DataLoader workers in ``__iter__`` via
    :func:`torch.utils.data.get_worker_info` (worker ``w`` of ``W`` takes shards ``w, w+W, ...``),
    so no sample repeats; with more workers than shards the extra workers yield nothing.
    """

    def __init__(
        self,
        directory: str | Path,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        verify: bool = True,
    ) -> None:
        """Open the dataset in ``directory`` (DagError if missing, incomplete or corrupt).

        ``verify`` (default) checks it against its manifest first
        (:func:`~dag_core.shards.integrity.verify_dataset`).
        """
        super().__init__()
        self.paths = dataset_shards(directory, verify)
        self.transform = transform
        self.num_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in self.paths)

    def __len__(self) -> int:
        """Total number of samples over all workers."""
        return self.num_rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this worker's share of samples, shard by shard."""
        info = torch.utils.data.get_worker_info()
        paths = self.paths if info is None else self.paths[info.id :: info.num_workers]
        if not paths:
            return
        columns = ["id", "rgb", "depth", "depth_dtype", "height", "width", "seed"]
        for path, batch in iter_batches(paths, columns):
            for row in batch.to_pylist():
                sample = row_sample(row, path)
                item = {
                    "id": sample.id,
                    "image": torch.from_numpy(sample.rgb).permute(2, 0, 1).float() / 127.5 - 1.0,
                    "depth": torch.from_numpy(sample.depth).unsqueeze(0),
                    "seed": -1 if sample.seed is None else sample.seed,
                }
                yield item if self.transform is None else self.transform(item)


def load_tensors(
    directory: str | Path, limit: int | None = None, *, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """A small dataset (e.g. the ~100-pair labelled subset) in memory, in shard order.

    Returns ``(images, depth)``: float32 (N, 3, H, W) in [-1, 1] and float32 (N, 1, H, W) metres.
    ``limit`` keeps the first ``limit`` rows; ``verify`` as in :class:`ShardDataset`.
    """
    images, depths = [], []
    for item in ShardDataset(directory, verify=verify):
        if limit is not None and len(images) >= limit:
            break
        images.append(item["image"])
        depths.append(item["depth"])
    return torch.stack(images), torch.stack(depths)
