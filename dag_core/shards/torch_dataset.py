"""Shard datasets as torch data: a streaming ``IterableDataset`` and small in-memory tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from dag_core.shards.codec import row_sample
from dag_core.shards.filtering import shard_keep_masks
from dag_core.shards.readers import dataset_shards, iter_rows


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream a shard dataset as dicts for a torch DataLoader.

    Yields ``{"id": str, "image": float32 (3, H, W) in [-1, 1], "depth": float32 (1, H, W) metres,
    "seed": int, "uncertainty": float32 scalar tensor}`` (``seed`` is -1 when the sample has none
    and ``uncertainty`` NaN when it has no score, e.g. measured depth, so ``default_collate``
    batches labelled and synthetic rows together), passed through ``transform`` if given. Shards
    are split across DataLoader workers in ``__iter__`` via
    :func:`torch.utils.data.get_worker_info` (worker ``w`` of ``W`` takes shards ``w, w+W, ...``),
    so no sample repeats; with more workers than shards the extra workers yield nothing.
    """

    def __init__(
        self,
        directory: str | Path,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        verify: bool = True,
        drop_uncertain: float = 0.0,
    ) -> None:
        """Open the dataset in ``directory`` (DagError if missing, incomplete or corrupt).

        ``verify`` (default) checks it against its manifest first
        (:func:`~dag_core.shards.integrity.verify_dataset`). ``drop_uncertain`` = f ∈ [0, 1)
        leaves out the most uncertain fraction f of the scored rows: ``N − floor(f · n)`` of the
        N rows are kept (n = rows with a score; ties: the later row goes first; rule in
        :mod:`~dag_core.shards.filtering`), decided here from the ``uncertainty`` column alone.
        """
        super().__init__()
        self.paths = dataset_shards(directory, verify)
        self.transform = transform
        #: per shard, the rows kept (None: all)
        self.keep = shard_keep_masks(self.paths, drop_uncertain)
        if self.keep is None:
            self.num_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in self.paths)
        else:
            self.num_rows = int(sum(int(m.sum()) for m in self.keep))

    def __len__(self) -> int:
        """Total number of samples (after filtering) over all workers."""
        return self.num_rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield this worker's share of samples, shard by shard."""
        info = torch.utils.data.get_worker_info()
        share = slice(None) if info is None else slice(info.id, None, info.num_workers)
        paths = self.paths[share]
        if not paths:
            return
        keep = None if self.keep is None else self.keep[share]
        columns = ["id", "rgb", "depth", "depth_dtype", "height", "width", "seed", "uncertainty"]
        for path, row in iter_rows(paths, columns, keep):
            sample = row_sample(row, path)
            u = float("nan") if sample.uncertainty is None else sample.uncertainty
            item = {
                "id": sample.id,
                "image": torch.from_numpy(sample.rgb).permute(2, 0, 1).float() / 127.5 - 1.0,
                "depth": torch.from_numpy(sample.depth).unsqueeze(0),
                "seed": -1 if sample.seed is None else sample.seed,
                "uncertainty": torch.tensor(u, dtype=torch.float32),
            }
            yield item if self.transform is None else self.transform(item)


def load_tensors(
    directory: str | Path,
    limit: int | None = None,
    *,
    verify: bool = True,
    drop_uncertain: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A small dataset (e.g. the ~100-pair labelled subset) in memory, in shard order.

    Returns ``(images, depth)``: float32 (N, 3, H, W) in [-1, 1] and float32 (N, 1, H, W) metres.
    ``verify`` and ``drop_uncertain`` as in :class:`ShardDataset` (the same rows are kept);
    ``limit`` then keeps the first ``limit`` of those rows.
    """
    images, depths = [], []
    for item in ShardDataset(directory, verify=verify, drop_uncertain=drop_uncertain):
        if limit is not None and len(images) >= limit:
            break
        images.append(item["image"])
        depths.append(item["depth"])
    return torch.stack(images), torch.stack(depths)
