"""Read shard datasets: decoded samples, stacked arrays, or the raw Arrow / pandas table.

Every reader first checks that the dataset is whole against its manifest (checksums included;
:func:`~dag_core.shards.integrity.verify_dataset`) unless told ``verify=False``, so an incomplete
or damaged dataset is never read as whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from dag_core.errors import DagError
from dag_core.shards.codec import SAMPLE_FIELDS, SCHEMA, Sample, row_sample
from dag_core.shards.integrity import open_shard, shard_files, verify_dataset


def dataset_shards(directory: str | Path, verify: bool = True) -> list[Path]:
    """The shard files of a dataset in index order (DagError naming the first bad one).

    ``verify`` (default): the dataset must be whole — see :func:`verify_dataset` — and exactly the
    shards its manifest lists are returned. ``verify=False`` takes every shard file whose footer
    opens, for datasets still being written.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DagError(f"dataset directory {directory} does not exist")
    if verify:
        manifest = verify_dataset(directory)
        return [directory / s["file"] for s in manifest["shards"]]
    paths = list(shard_files(directory).values())
    if not paths:
        raise DagError(f"dataset directory {directory} holds no part-*.parquet shards")
    for path in paths:
        open_shard(path)
    return paths


def _arrow_dataset(paths: list[Path]) -> ds.Dataset:
    """A pyarrow dataset over ``paths``, whose fragments keep the given order."""
    return ds.dataset([str(p) for p in paths], schema=SCHEMA, format="parquet")


def iter_batches(paths: list[Path], columns: list[str]) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Record batches of ``columns`` over ``paths`` in order; DagError naming a corrupt file."""
    for path, fragment in zip(paths, _arrow_dataset(paths).get_fragments(), strict=True):
        try:
            yield from ((path, batch) for batch in fragment.to_batches(columns=columns))
        except (OSError, pa.ArrowException) as exc:
            raise DagError(f"corrupt shard {path}: {exc}") from exc


def read_samples(
    directory: str | Path, *, columns: Sequence[str] | None = None, verify: bool = True
) -> Iterator[Sample]:
    """Yield every sample of the dataset, shard by shard in index order, decoded.

    ``verify`` (default) first checks the dataset is whole against its manifest (checksums
    included; :func:`verify_dataset`), so an incomplete or damaged dataset is never read as whole.

    ``columns`` picks which :class:`Sample` fields to read and decode (a subset of
    :data:`SAMPLE_FIELDS`; ``id`` is always read); ``rgb``/``depth`` left out come back as None,
    the other fields as their defaults. Default: all fields.
    """
    wanted = list(SAMPLE_FIELDS if columns is None else columns)
    unknown = sorted(set(wanted) - set(SAMPLE_FIELDS))
    if unknown:
        raise DagError(f"unknown sample columns {unknown}; expected a subset of {SAMPLE_FIELDS}")
    arrow_cols = ["id", "height", "width", *wanted]
    if "depth" in wanted:
        arrow_cols.append("depth_dtype")
    paths = dataset_shards(directory, verify)  # before the first sample is yielded
    return _read_rows(paths, arrow_cols)


def _read_rows(paths: list[Path], arrow_cols: list[str]) -> Iterator[Sample]:
    for path, batch in iter_batches(paths, arrow_cols):
        for row in batch.to_pylist():
            yield row_sample(row, path)


def read_arrays(
    directory: str | Path, limit: int | None = None, *, depth: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """The first ``limit`` (default: all) samples as stacked arrays: images uint8 (N, H, W, 3)
    and (``depth``) their depth in metres (N, h, w), else None. DagError if there are none."""
    rgb, depths = [], []
    columns = ["rgb", "depth"] if depth else ["rgb"]
    for s in read_samples(directory, columns=columns):
        rgb.append(s.rgb)
        if depth:
            depths.append(s.depth)
        if limit is not None and len(rgb) == limit:
            break
    if not rgb:
        raise DagError(f"no images in {directory}")
    return np.stack(rgb), (np.stack(depths) if depth else None)


def read_table(directory: str | Path, *, verify: bool = True) -> pa.Table:
    """All shards of the dataset as one raw :data:`SCHEMA` table, rows in shard order.

    ``verify``: as in :func:`read_samples`. Use this (or ``read_table(d).to_pandas()``) rather
    than ``pandas.read_parquet(d)``, which reads whatever files are there.
    """
    paths = dataset_shards(directory, verify)
    batches = [batch for _, batch in iter_batches(paths, SCHEMA.names)]
    return pa.Table.from_batches(batches, schema=SCHEMA)


def read_pandas(directory: str | Path, *, verify: bool = True) -> Any:
    """The raw rows as a pandas DataFrame, after the same check as :func:`read_table`."""
    return read_table(directory, verify=verify).to_pandas()
