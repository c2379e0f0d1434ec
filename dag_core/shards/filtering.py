"""Filtering at read time: leave out the rows whose depth label is least certain.

ddpm-segmentation (Baranchuk et al., "Label-Efficient Semantic Segmentation with Diffusion
Models", ICLR 2022) labels its generated images with an ensemble of pixel MLPs and drops the
10–25 % of them its ensemble is least sure of before training on them. DAG synthesis (Kim et al.,
arXiv 2212.08861) stores such a score in every row (the ``uncertainty`` column,
:mod:`dag_core.uncertainty`), and every reader takes ``drop_uncertain=f`` to leave out the most
uncertain fraction f ∈ [0, 1) of a dataset:

* the rows whose ``uncertainty`` is null (measured depth, shards from before the column) or NaN
  are always kept and do not count;
* of the n scored rows, exactly ``d = floor(f · n)`` are dropped — the d largest scores, f taken
  as the decimal it is written as (0.29 of 100 rows drops 29, not 28), so
  ``N − floor(f · n)`` of the N rows are kept;
* ties are broken by dataset order (shard by shard, row by row): of equal scores, the later row
  is dropped first. Equivalently the threshold is the (n − d)-th smallest score: rows above it
  are dropped, rows equal to it kept in dataset order until n − d scored rows are kept.

The scores are read on their own (Parquet column projection), before any image is decoded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from dag_core.errors import DagError
from dag_core.validation import check_value

#: the fraction of scored rows to drop
DropFraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


def dropped_count(fraction: float, scored: int) -> int:
    """``floor(fraction · scored)``, exact for the decimal ``fraction`` is written as."""
    check_value(DropFraction, fraction, "drop_uncertain")
    return math.floor(Decimal(repr(float(fraction))) * scored)


def keep_mask(uncertainty: np.ndarray | Sequence[float | None], fraction: float) -> np.ndarray:
    """Which rows to keep (bool, one per row) when the most uncertain ``fraction`` is dropped.

    ``uncertainty`` holds each row's score in dataset order, NaN (or None) where it has none.
    See the module doc for the exact rule.
    """
    if isinstance(uncertainty, np.ndarray):
        u = uncertainty.astype(np.float64).reshape(-1)
    else:
        u = np.array([np.nan if v is None else v for v in uncertainty], dtype=np.float64)
    scored = np.flatnonzero(~np.isnan(u))
    drop = dropped_count(fraction, scored.size)
    keep = np.ones(u.size, dtype=bool)
    if drop:
        ranked = scored[np.argsort(u[scored], kind="stable")]  # ascending, ties in dataset order
        keep[ranked[scored.size - drop :]] = False
    return keep


def read_uncertainty(path: Path) -> np.ndarray:
    """The ``uncertainty`` column of one shard as float64, NaN for null (all NaN for a version 1
    shard, which has no such column); only that column is read."""
    try:
        pf = pq.ParquetFile(path)
        if "uncertainty" not in pf.schema_arrow.names:
            return np.full(pf.metadata.num_rows, np.nan)
        column = pf.read(columns=["uncertainty"]).column("uncertainty")
    except (OSError, pa.ArrowException) as exc:
        raise DagError(f"corrupt shard {path}: {exc}") from exc
    return column.to_numpy(zero_copy_only=False).astype(np.float64)


def shard_keep_masks(paths: Sequence[Path], fraction: float) -> list[np.ndarray] | None:
    """Per shard (in ``paths`` order, the dataset's order) the rows kept when dropping the most
    uncertain ``fraction`` of the whole dataset; None when ``fraction`` is 0 (nothing is read)."""
    check_value(DropFraction, fraction, "drop_uncertain")
    if fraction == 0:
        return None
    scores = [read_uncertainty(p) for p in paths]
    keep = keep_mask(np.concatenate(scores) if scores else np.zeros(0), fraction)
    bounds = np.cumsum([0, *(len(s) for s in scores)])
    return [keep[a:b] for a, b in itertools.pairwise(bounds)]
