"""The shard schema and how one sample becomes one Parquet row and back.

Columns (:data:`SCHEMA`): ``id`` string; ``rgb`` PNG bytes (lossless); ``depth`` raw
little-endian bytes in ``depth_dtype`` ∈ {``float16``, ``float32``, ``uint16mm``}; ``height``,
``width`` int32; ``seed`` int64 (nullable); ``source`` string; ``meta`` a JSON object for everything
else (guidance scales, sampler, model hashes...); ``uncertainty`` float32 (nullable), the label's
uncertainty score (higher = less sure; :mod:`dag_core.uncertainty`), null where the depth is a
measurement or no score was computed. Depth is never 8-bit. ``uint16mm`` stores
``round(metres * 1000)`` clipped to 0..65535, with 0 meaning invalid/missing (read back as 0.0 m).
Every read returns depth as float32 metres.

Schema versions: 2 added ``uncertainty``; shards of version 1 (:data:`SCHEMA_V1`, written before)
are still read, their ``uncertainty`` as null. Writers always write the current :data:`SCHEMA`.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from PIL import Image
from pydantic import Field

from dag_core.errors import DagError
from dag_core.validation import check_value

#: a shard's index in its dataset
ShardIndex = Annotated[int, Field(ge=0)]

SCHEMA_VERSION = 2
MANIFEST_NAME = "_manifest.json"
DEPTH_DTYPES = ("float16", "float32", "uint16mm")
#: the schema of version 1 shards (before ``uncertainty``), still read
SCHEMA_V1 = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("rgb", pa.binary(), nullable=False),
        pa.field("depth", pa.binary(), nullable=False),
        pa.field("depth_dtype", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=True),
        pa.field("source", pa.string(), nullable=False),
        pa.field("meta", pa.string(), nullable=False),
    ]
)
SCHEMA = SCHEMA_V1.append(pa.field("uncertainty", pa.float32(), nullable=True))
#: every schema version readers accept; writers write :data:`SCHEMA_VERSION`
SCHEMAS = {1: SCHEMA_V1, 2: SCHEMA}
SAMPLE_FIELDS = ("rgb", "depth", "seed", "source", "meta", "uncertainty")
#: file names of shards (temporary and checksum files are dot-files and never match)
SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_NUMPY_DTYPES = {"float16": "<f2", "float32": "<f4", "uint16mm": "<u2"}


@dataclass
class Sample:
    """One image–depth pair: ``rgb`` uint8 (H, W, 3), ``depth`` float32 metres (H, W).

    ``uncertainty``: how unsure the depth label is (higher = less sure; stored as float32), None
    for measured depth or when no score was computed.
    """

    id: str
    rgb: np.ndarray
    depth: np.ndarray
    seed: int | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    uncertainty: float | None = None


def check_dtype(dtype: str) -> None:
    """Raise :class:`DagError` unless ``dtype`` is one of :data:`DEPTH_DTYPES`."""
    if dtype not in DEPTH_DTYPES:
        raise DagError(f"unknown depth_dtype {dtype!r}; expected one of {', '.join(DEPTH_DTYPES)}")


def encode_depth(depth: np.ndarray, dtype: str) -> bytes:
    """Encode a (H, W) depth map in metres as raw little-endian bytes of ``dtype``.

    ``float16``/``float32`` cast the metres; ``uint16mm`` stores ``round(metres * 1000)`` clipped
    to 0..65535, with non-finite values stored as 0 (invalid/missing).
    """
    check_dtype(dtype)
    arr = np.asarray(depth)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise DagError(f"depth must be a 2-D float array in metres, got {arr.dtype} {arr.shape}")
    if dtype == "uint16mm":
        mm = np.where(np.isfinite(arr), np.rint(arr.astype(np.float64) * 1000.0), 0.0)
        arr = np.clip(mm, 0, np.iinfo(np.uint16).max)
    return np.ascontiguousarray(arr, dtype=_NUMPY_DTYPES[dtype]).tobytes()


def decode_depth(buf: bytes, dtype: str, height: int, width: int) -> np.ndarray:
    """Decode bytes from :func:`encode_depth` into a float32 (height, width) map in metres.

    ``uint16mm`` zeros (invalid/missing) come back as 0.0.
    """
    check_dtype(dtype)
    np_dtype = np.dtype(_NUMPY_DTYPES[dtype])
    if len(buf) != height * width * np_dtype.itemsize:
        raise DagError(f"depth buffer of {len(buf)} bytes does not fit {height}x{width} {dtype}")
    arr = np.frombuffer(buf, dtype=np_dtype).reshape(height, width)
    if dtype == "uint16mm":
        return arr.astype(np.float32) / np.float32(1000.0)
    return arr.astype(np.float32)


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``part-00000.parquet``, ``part-00001.parquet``, ..."""
    check_value(ShardIndex, index, "shard index")
    return f"part-{index:05d}.parquet"


def _encode_png(rgb: np.ndarray) -> bytes:
    """Losslessly encode a uint8 (H, W, 3) array as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(out, format="PNG")
    return out.getvalue()


def _decode_png(buf: bytes, height: int, width: int, where: str) -> np.ndarray:
    """Decode PNG bytes into a uint8 (height, width, 3) array; ``where`` names the sample."""
    with Image.open(io.BytesIO(buf)) as img:
        rgb = np.array(img.convert("RGB"))
    if rgb.shape != (height, width, 3):
        raise DagError(f"{where}: rgb decodes to {rgb.shape}, expected ({height}, {width}, 3)")
    return rgb


def sample_row(sample: Sample, depth_dtype: str) -> dict[str, Any]:
    """Validate one sample and encode it as a row of :data:`SCHEMA`."""
    rgb, depth = np.asarray(sample.rgb), np.asarray(sample.depth)
    if not isinstance(sample.id, str) or not sample.id:
        raise DagError(f"sample id must be a non-empty string, got {sample.id!r}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DagError(
            f"sample {sample.id!r}: rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}"
        )
    if depth.shape != rgb.shape[:2]:
        raise DagError(
            f"sample {sample.id!r}: depth shape {depth.shape} != rgb shape {rgb.shape[:2]}"
        )
    if not isinstance(sample.meta, dict):
        raise DagError(
            f"sample {sample.id!r}: meta must be a dict, got {type(sample.meta).__name__}"
        )
    try:
        meta = json.dumps(sample.meta, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise DagError(f"sample {sample.id!r}: meta is not JSON-serialisable: {exc}") from exc
    uncertainty = sample.uncertainty
    if uncertainty is not None:
        if isinstance(uncertainty, bool) or not isinstance(uncertainty, numbers.Real):
            raise DagError(
                f"sample {sample.id!r}: uncertainty must be a number or None, got {uncertainty!r}"
            )
        uncertainty = float(uncertainty)
        if math.isnan(uncertainty):
            raise DagError(f"sample {sample.id!r}: uncertainty is NaN (use None for no score)")
    return {
        "id": sample.id,
        "rgb": _encode_png(rgb),
        "depth": encode_depth(depth, depth_dtype),
        "depth_dtype": depth_dtype,
        "height": rgb.shape[0],
        "width": rgb.shape[1],
        "seed": None if sample.seed is None else int(sample.seed),
        "source": str(sample.source),
        "meta": meta,
        "uncertainty": uncertainty,
    }


def row_sample(row: dict[str, Any], path: Path) -> Sample:
    """Decode one Parquet row into a :class:`Sample`; fields not read stay None/default."""
    where = f"{path} row {row['id']!r}"
    h, w = row["height"], row["width"]
    rgb = _decode_png(row["rgb"], h, w, where) if "rgb" in row else None
    depth = None
    if "depth" in row:
        try:
            depth = decode_depth(row["depth"], row["depth_dtype"], h, w)
        except DagError as exc:
            raise DagError(f"{where}: {exc}") from exc
    return Sample(
        id=row["id"],
        rgb=rgb,
        depth=depth,
        seed=row.get("seed"),
        source=row.get("source", ""),
        meta=json.loads(row["meta"]) if "meta" in row else {},
        uncertainty=row.get("uncertainty"),
    )
