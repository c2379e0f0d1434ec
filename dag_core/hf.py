"""Hugging Face ``datasets`` interop for the image–depth shard datasets (paper §4's synthetic data).

A dataset written by DAG synthesis (Kim et al., arXiv 2212.08861) — or any shard dataset of
:mod:`dag_core.shards` — is plain Parquet whose schema (version 3) declares ``datasets``
features, so ``datasets`` alone opens and decodes it: ``load_dataset(directory)`` (the folder's
``README.md`` card names the shards), ``rgb`` a PIL image, ``depth`` an ``Array2D`` of stored
values (metres for float16 / float32, millimetres for uint16mm; the card and the field metadata
say which). This module adds the package's checks and decoding. Give ``datasets`` the file list
of :func:`shard_files`, which first checks that the dataset is whole (manifest present, every
listed shard there with its row count and sha256, none unlisted; a glob such as
``part-*.parquet`` would read a dataset with a shard missing or damaged as whole)::

    from datasets import load_dataset
    from dag_core.hf import decode_batch, shard_files

    files = shard_files("data/synthetic/dag")     # DagError naming a missing or damaged shard
    ds = load_dataset("parquet", data_files=files, split="train")
    ds = ds.with_transform(decode_batch)   # decoded lazily, row by row or in batches
    ds[0]["depth"]                          # float32 (H, W) metres
    ds[0]["image"]                          # uint8 (H, W, 3)

:func:`load_shards` does all three. ``verify=False`` skips the check (a dataset still being
written).

The columns are those of :data:`dag_core.shards.SCHEMA`: ``rgb`` (an ``Image``; PNG bytes in
schema versions 1–2), ``depth`` (an ``Array2D`` of ``depth_dtype``'s values; raw little-endian
bytes in versions 1–2), ``depth_dtype`` (``float16`` / ``float32`` / ``uint16mm``), ``height``,
``width``, ``seed``, ``source``, ``meta`` (JSON text) and ``uncertainty`` (float32, nullable).
:func:`decode_example` and :func:`decode_batch` turn any version into arrays with the same
decoding as the project's own readers (:func:`dag_core.shards.decode_depth`), so depth is float32
metres and never 8-bit. ``datasets`` itself is an optional dependency (the ``dev`` extra); only
:func:`load_shards` imports it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dag_core.errors import DagError
from dag_core.shards import decode_depth, verify_dataset
from dag_core.shards.codec import depth_metres

_DECODED = ("image", "depth", "meta")
#: the numpy dtype ``datasets`` hands version 3 depth back in, by ``depth_dtype``
_STORED = {"float16": np.float16, "float32": np.float32, "uint16mm": np.uint16}


def decode_example(row: dict[str, Any]) -> dict[str, Any]:
    """Decode one raw row: ``image`` uint8 (H, W, 3), ``depth`` float32 (H, W) metres, ``meta``
    dict; ``id``, ``seed``, ``source`` and ``uncertainty`` (the label's score; None where it has
    none, as in shards of schema version 1) are passed through, the raw byte columns dropped."""
    try:
        height, width = int(row["height"]), int(row["width"])
        depth, dtype = row["depth"], row["depth_dtype"]
        if isinstance(depth, bytes):  # schema versions 1 and 2
            depth = decode_depth(depth, dtype, height, width)
        else:  # version 3: an Array2D of stored values (lists, or an array when formatted)
            stored = np.asarray(depth, dtype=_STORED[dtype])
            if stored.shape != (height, width):
                raise DagError(
                    f"row {row.get('id')!r}: depth {stored.shape} does not fit {height}x{width}"
                )
            depth = depth_metres(stored, dtype)
        image = _rgb_array(row["rgb"])
    except KeyError as exc:
        raise DagError(f"row has no column {exc}; expected a dag_core shard dataset") from None
    if image.shape[:2] != (height, width):
        raise DagError(
            f"row {row.get('id')!r}: image is {image.shape[1]}x{image.shape[0]}, "
            f"depth is {width}x{height}"
        )
    out = {k: row[k] for k in ("id", "seed", "source") if k in row}
    out["uncertainty"] = row.get("uncertainty")
    meta = row.get("meta")
    out.update(image=image, depth=depth, meta=json.loads(meta) if meta else {})
    return out


def _rgb_array(rgb: Any) -> np.ndarray:
    """The uint8 (H, W, 3) of an ``rgb`` cell: PNG bytes, an undecoded ``Image`` struct, or the
    PIL image ``datasets`` decodes it to."""
    if isinstance(rgb, dict):
        rgb = rgb["bytes"]
    if isinstance(rgb, bytes):
        with Image.open(io.BytesIO(rgb)) as im:
            return np.asarray(im.convert("RGB"))
    return np.asarray(rgb.convert("RGB"))


def decode_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Batched :func:`decode_example` for ``Dataset.with_transform`` / ``set_transform`` /
    ``map(batched=True)``: a dict of columns in, a dict of decoded columns out."""
    n = len(next(iter(batch.values()))) if batch else 0
    rows = [decode_example({k: v[i] for k, v in batch.items()}) for i in range(n)]
    keys = rows[0].keys() if rows else _DECODED
    return {k: [r[k] for r in rows] for k in keys}


def shard_files(directory: str | Path, *, verify: bool = True) -> list[str]:
    """The dataset's shard files in order, for ``data_files=``.

    ``verify`` (default): the dataset must be whole (:func:`dag_core.shards.verify_dataset`:
    manifest, every listed shard present with its row count and sha256, none unlisted; DagError
    naming the first problem) and exactly the shards its manifest lists are returned.
    ``verify=False``: every ``part-*.parquet`` file there, unchecked (a dataset being written).
    """
    directory = Path(directory)
    if verify:
        manifest = verify_dataset(directory)
        return [str(directory / s["file"]) for s in manifest["shards"]]
    files = sorted(str(p) for p in directory.glob("part-*.parquet"))
    if not files:
        raise DagError(f"no part-*.parquet shards in {directory}")
    return files


def load_shards(
    directory: str | Path,
    cache_dir: str | Path | None = None,
    decode: bool = True,
    *,
    verify: bool = True,
):
    """``datasets.load_dataset("parquet", data_files=<the shards>, split="train")``, with
    :func:`decode_batch` set as its transform unless ``decode`` is false. The dataset is
    checked whole first (:func:`shard_files`) unless ``verify`` is false."""
    from datasets import load_dataset

    ds = load_dataset(
        "parquet",
        data_files=shard_files(directory, verify=verify),
        split="train",
        cache_dir=None if cache_dir is None else str(cache_dir),
    )
    return ds.with_transform(decode_batch) if decode else ds
