"""Read shard datasets: decoded samples, stacked arrays, or the raw Arrow / pandas table.

Every reader first checks that the dataset is whole against its manifest (checksums included;
:func:`~dag_core.shards.integrity.verify_dataset`) unless told ``verify=False``, so an incomplete
or damaged dataset is never read as whole. ``drop_uncertain=f`` leaves out the most uncertain
fraction f of the rows (:mod:`~dag_core.shards.filtering` states exactly which). Every schema
version reads: shards of version 1 with a null ``uncertainty``; samples, arrays and tensors come
out the same from version 2 (PNG / depth bytes) and version 3 (``datasets`` features) shards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dag_core.errors import DagError
from dag_core.shards.codec import SAMPLE_FIELDS, SCHEMA_V2, Sample, depth_arrays, row_sample
from dag_core.shards.filtering import shard_keep_masks
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


def _storage(table: pa.Table) -> pa.Table:
    """``table`` with each extension column (``datasets``, once imported, reads ``depth`` as its
    ``Array2D`` extension) as its storage, so what a read returns never depends on it."""
    for i, f in enumerate(table.schema):
        if isinstance(f.type, pa.ExtensionType):
            chunks = [c.storage for c in table.column(i).chunks]
            storage = pa.chunked_array(chunks, type=f.type.storage_type)
            table = table.set_column(i, f.with_type(f.type.storage_type), storage)
    return table


def iter_batches(paths: list[Path], columns: list[str]) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Record batches of ``columns`` over ``paths`` in order, row group by row group, in each
    shard's own schema version as stored (``uncertainty``, which a version 1 shard lacks, comes
    back null) and without schema metadata; DagError naming a corrupt file."""
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group, columns=[c for c in columns if c in names])
                for name in (c for c in columns if c not in names):
                    field = SCHEMA_V2.field(name)
                    table = table.append_column(field, pa.nulls(table.num_rows, field.type))
                table = _storage(table.select(columns)).replace_schema_metadata(None)
                yield from ((path, batch) for batch in table.to_batches())
        except (OSError, pa.ArrowException) as exc:
            raise DagError(f"corrupt shard {path}: {exc}") from exc


def iter_rows(
    paths: list[Path], columns: list[str], keep: list[np.ndarray] | None = None
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Raw rows (dicts of ``columns``) over ``paths`` in order, batch by batch; with ``keep`` (one
    bool mask per shard, :func:`~dag_core.shards.filtering.shard_keep_masks`) only the rows it
    keeps (the others are never converted)."""
    masks = None if keep is None else dict(zip(paths, keep, strict=True))
    current, offset = None, 0
    for path, batch in iter_batches(paths, columns):
        if path != current:
            current, offset = path, 0
        if masks is not None:
            mask = masks[path][offset : offset + batch.num_rows]
            offset += batch.num_rows
            batch = batch.filter(pa.array(mask, type=pa.bool_()))
        depth = None
        if "depth" in batch.schema.names and not pa.types.is_binary(
            batch.schema.field("depth").type
        ):
            depth = depth_arrays(batch.column("depth"))  # version 3: never via Python floats
            batch = batch.drop_columns(["depth"])
        for i, row in enumerate(batch.to_pylist()):
            if depth is not None:
                row["depth"] = depth[i]
            yield path, row


def read_samples(
    directory: str | Path,
    *,
    columns: Sequence[str] | None = None,
    verify: bool = True,
    drop_uncertain: float = 0.0,
) -> Iterator[Sample]:
    """Yield every sample of the dataset, shard by shard in index order, decoded.

    ``verify`` (default) first checks the dataset is whole against its manifest (checksums
    included; :func:`verify_dataset`), so an incomplete or damaged dataset is never read as whole.

    ``columns`` picks which :class:`Sample` fields to read and decode (a subset of
    :data:`SAMPLE_FIELDS`; ``id`` is always read); ``rgb``/``depth`` left out come back as None,
    the other fields as their defaults. Default: all fields.

    ``drop_uncertain``: leave out the most uncertain fraction of the rows, in [0, 1) (exactly
    ``N − floor(f · n)`` of N rows are kept, n = rows with a score;
    :mod:`~dag_core.shards.filtering`).
    """
    wanted = list(SAMPLE_FIELDS if columns is None else columns)
    unknown = sorted(set(wanted) - set(SAMPLE_FIELDS))
    if unknown:
        raise DagError(f"unknown sample columns {unknown}; expected a subset of {SAMPLE_FIELDS}")
    arrow_cols = ["id", "height", "width", *wanted]
    if "depth" in wanted:
        arrow_cols.append("depth_dtype")
    paths = dataset_shards(directory, verify)  # before the first sample is yielded
    keep = shard_keep_masks(paths, drop_uncertain)
    return (row_sample(row, path) for path, row in iter_rows(paths, arrow_cols, keep))


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


def read_table(
    directory: str | Path, *, verify: bool = True, drop_uncertain: float = 0.0
) -> pa.Table:
    """All shards of the dataset as one raw table in its shards' schema, rows in shard order:
    version 3 with the first shard's ``datasets`` metadata, version 1 as :data:`SCHEMA_V2`
    (``uncertainty`` null).

    ``verify``, ``drop_uncertain``: as in :func:`read_samples`. Use this (or
    ``read_table(d).to_pandas()``) rather than ``pandas.read_parquet(d)``, which reads whatever
    files are there.
    """
    paths = dataset_shards(directory, verify)
    keep = shard_keep_masks(paths, drop_uncertain)
    batches = [batch for _, batch in iter_batches(paths, SCHEMA_V2.names)]
    schema = pq.read_schema(paths[0])
    try:
        table = pa.Table.from_batches(batches).replace_schema_metadata(schema.metadata)
    except pa.ArrowInvalid as exc:
        raise DagError(f"shards of {directory} differ in schema: {exc}") from exc
    if keep is not None:
        table = table.filter(pa.array(np.concatenate(keep), type=pa.bool_()))
    return table


def read_pandas(directory: str | Path, *, verify: bool = True, drop_uncertain: float = 0.0) -> Any:
    """The raw rows as a pandas DataFrame (``uncertainty`` a float column, NaN where null), after
    the same check and filter as :func:`read_table`."""
    return read_table(directory, verify=verify, drop_uncertain=drop_uncertain).to_pandas()
