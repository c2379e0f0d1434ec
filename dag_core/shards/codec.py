"""The shard schema and how one sample becomes one Parquet row and back.

Columns of schema version 3 (:func:`schema_v3`; :data:`SCHEMA` is its ``float16`` form), each
declared as a Hugging Face ``datasets`` feature in the Parquet schema metadata (key
``huggingface``, exactly as ``datasets`` writes it; :func:`hf_features`), so ``load_dataset``,
the Hub's viewer, pandas and pyarrow read them typed without this package:

* ``id`` string; ``rgb`` the ``Image`` feature: a ``{bytes, path}`` struct of PNG bytes (lossless),
  ``path`` null;
* ``depth`` an ``Array2D`` (H, W) of ``depth_dtype``'s storage type: ``float16`` / ``float32``
  metres, or ``uint16mm`` as ``uint16`` millimetres (``round(metres * 1000)`` clipped to 0..65535,
  0 meaning invalid/missing, read back as 0.0 m). Its Arrow field metadata says how to get metres
  (``unit: m``, ``scale``: metres per stored unit, ``invalid``). Depth is never 8-bit;
* ``depth_dtype`` string, ``height`` / ``width`` int32, ``seed`` int64 (nullable), ``source``
  string, ``meta`` a JSON object as text (guidance scales, sampler, model hashes...; its keys
  differ per dataset and are empty for measured data, which a Parquet struct cannot hold), and
  ``uncertainty`` float32 (nullable): the label's uncertainty score (higher = less sure;
  :mod:`dag_core.uncertainty`), null where the depth is a measurement or no score was computed.

Every read returns depth as float32 metres. Schema versions: 3 made ``rgb`` and ``depth`` the
``datasets`` features above; 2 (:data:`SCHEMA_V2`: ``rgb`` PNG bytes, ``depth`` raw
little-endian bytes in ``depth_dtype``) added ``uncertainty``; version 1 (:data:`SCHEMA_V1`) is
read with ``uncertainty`` null. Every version still reads; writers write version 3.
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

SCHEMA_VERSION = 3
MANIFEST_NAME = "_manifest.json"
DEPTH_DTYPES = ("float16", "float32", "uint16mm")
#: metres per stored depth unit, by ``depth_dtype``
DEPTH_SCALE = {"float16": 1.0, "float32": 1.0, "uint16mm": 0.001}
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
#: the schema of version 2 shards (PNG and raw depth bytes), still read
SCHEMA_V2 = SCHEMA_V1.append(pa.field("uncertainty", pa.float32(), nullable=True))
#: Arrow storage of the ``datasets`` ``Image`` feature
IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
_ARROW_DEPTH = {"float16": pa.float16(), "float32": pa.float32(), "uint16mm": pa.uint16()}
_HF_DEPTH = {"float16": "float16", "float32": "float32", "uint16mm": "uint16"}
_VALUES = {
    "id": "string",
    "depth_dtype": "string",
    "height": "int32",
    "width": "int32",
    "seed": "int64",
    "source": "string",
    "meta": "string",
    "uncertainty": "float32",
}
_ARRAY2D = "datasets.features.features.Array2DExtensionType"


def check_dtype(dtype: str) -> None:
    """Raise :class:`DagError` unless ``dtype`` is one of :data:`DEPTH_DTYPES`."""
    if dtype not in DEPTH_DTYPES:
        raise DagError(f"unknown depth_dtype {dtype!r}; expected one of {', '.join(DEPTH_DTYPES)}")


def schema_v3(depth_dtype: str) -> pa.Schema:
    """The version 3 schema of shards whose depth is stored as ``depth_dtype`` (every field
    nullable, as ``datasets`` declares its features; the writer never writes a null but ``seed``
    and ``uncertainty``)."""
    check_dtype(depth_dtype)
    types = {name: pa.type_for_alias(dtype) for name, dtype in _VALUES.items()}
    types.update(rgb=IMAGE_TYPE, depth=pa.list_(pa.list_(_ARROW_DEPTH[depth_dtype])))
    return pa.schema([pa.field(name, types[name]) for name in SCHEMA_V2.names])


#: the current schema for the default ``float16`` depth (:func:`schema_v3` gives the others)
SCHEMA = schema_v3("float16")
#: every schema version readers accept (version 3 in one form per depth dtype); writers write
#: :data:`SCHEMA_VERSION`
SCHEMAS = {1: (SCHEMA_V1,), 2: (SCHEMA_V2,), 3: tuple(schema_v3(d) for d in DEPTH_DTYPES)}
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


def storage_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with each extension type (``datasets`` registers ``Array2D`` when imported)
    replaced by its storage type, as the shard holds it."""
    for i, f in enumerate(schema):
        if isinstance(f.type, pa.ExtensionType):
            schema = schema.set(i, f.with_type(f.type.storage_type))
    return schema


def depth_field_metadata(dtype: str) -> dict[str, str]:
    """How a stored ``depth`` value becomes metres, as the field's Arrow metadata: ``unit`` m,
    ``scale`` (metres = value × scale) and ``invalid`` (the value meaning no depth, or none)."""
    return {
        "unit": "m",
        "scale": repr(DEPTH_SCALE[dtype]),
        "invalid": "0" if dtype == "uint16mm" else "none",
    }


def hf_features(depth_dtype: str, shape: tuple[int, int] | None) -> dict[str, Any]:
    """The shard columns as ``datasets`` features, in ``Features.to_dict()`` form.

    Args:
        depth_dtype: How depth is stored (one of :data:`DEPTH_DTYPES`).
        shape: The (H, W) every depth map of the shard has, for an ``Array2D``; None when the
            shard mixes sizes (depth is then a ``List`` of ``List`` of the same values).
    """
    check_dtype(depth_dtype)
    value = {"dtype": _HF_DEPTH[depth_dtype], "_type": "Value"}
    depth = (
        {"shape": list(shape), "dtype": _HF_DEPTH[depth_dtype], "_type": "Array2D"}
        if shape is not None
        else {"feature": {"feature": value, "_type": "List"}, "_type": "List"}
    )
    value_of = {name: {"dtype": dtype, "_type": "Value"} for name, dtype in _VALUES.items()}
    columns = {**value_of, "rgb": {"_type": "Image"}, "depth": depth}
    return {name: columns[name] for name in SCHEMA_V2.names}


def hf_schema(depth_dtype: str, shape: tuple[int, int] | None) -> pa.Schema:
    """:func:`schema_v3` with the ``datasets`` metadata: the features under ``huggingface`` (as
    ``datasets`` writes them) and, on ``depth``, its ``Array2D`` extension and unit."""
    schema = schema_v3(depth_dtype)
    meta = depth_field_metadata(depth_dtype)
    if shape is not None:
        extension = json.dumps([list(shape), _HF_DEPTH[depth_dtype]])
        meta = {"ARROW:extension:metadata": extension, "ARROW:extension:name": _ARRAY2D, **meta}
    index = schema.get_field_index("depth")
    schema = schema.set(index, schema.field("depth").with_metadata(meta))
    features = {"info": {"features": hf_features(depth_dtype, shape)}}
    return schema.with_metadata({"huggingface": json.dumps(features)})


def depth_array(depth: np.ndarray, dtype: str) -> np.ndarray:
    """A (H, W) depth map in metres as its stored values in ``dtype`` (little-endian).

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
    return np.ascontiguousarray(arr, dtype=_NUMPY_DTYPES[dtype])


def encode_depth(depth: np.ndarray, dtype: str) -> bytes:
    """Encode a (H, W) depth map in metres as raw little-endian bytes of ``dtype`` (schema
    versions 1 and 2; :func:`depth_array` gives the values)."""
    return depth_array(depth, dtype).tobytes()


def depth_metres(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored depth values of ``dtype`` as float32 metres (``uint16mm`` zeros stay 0.0)."""
    check_dtype(dtype)
    if dtype == "uint16mm":
        return stored.astype(np.float32) / np.float32(1000.0)
    return stored.astype(np.float32)


def decode_depth(buf: bytes, dtype: str, height: int, width: int) -> np.ndarray:
    """Decode bytes from :func:`encode_depth` into a float32 (height, width) map in metres.

    ``uint16mm`` zeros (invalid/missing) come back as 0.0.
    """
    check_dtype(dtype)
    np_dtype = np.dtype(_NUMPY_DTYPES[dtype])
    if len(buf) != height * width * np_dtype.itemsize:
        raise DagError(f"depth buffer of {len(buf)} bytes does not fit {height}x{width} {dtype}")
    return depth_metres(np.frombuffer(buf, dtype=np_dtype).reshape(height, width), dtype)


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
    """Validate one sample and encode it as a row of :func:`schema_v3` (``rgb`` PNG bytes,
    ``depth`` its stored (H, W) array; :func:`rows_table` makes the Arrow columns)."""
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
        "depth": depth_array(depth, depth_dtype),
        "depth_dtype": depth_dtype,
        "height": rgb.shape[0],
        "width": rgb.shape[1],
        "seed": None if sample.seed is None else int(sample.seed),
        "source": str(sample.source),
        "meta": meta,
        "uncertainty": uncertainty,
    }


def rows_table(rows: list[dict[str, Any]], depth_dtype: str) -> pa.Table:
    """Rows of :func:`sample_row` as a version 3 table with its ``datasets`` metadata
    (:func:`hf_schema`); depth is built from one flat array, never from Python floats."""
    shapes = {r["depth"].shape for r in rows}
    schema = hf_schema(depth_dtype, shapes.pop() if len(shapes) == 1 else None)
    heights = np.array([r["depth"].shape[0] for r in rows], dtype=np.int32)
    widths = np.concatenate(
        [np.full(h, r["depth"].shape[1]) for h, r in zip(heights, rows, strict=True)]
    )
    values = pa.array(np.concatenate([r["depth"].reshape(-1) for r in rows]))
    lines = pa.ListArray.from_arrays(
        np.concatenate([[0], np.cumsum(widths)]).astype(np.int32), values
    )
    depth = pa.ListArray.from_arrays(
        np.concatenate([[0], np.cumsum(heights)]).astype(np.int32), lines
    )
    images = pa.array([{"bytes": r["rgb"], "path": None} for r in rows], type=IMAGE_TYPE)
    columns = {**{k: [r[k] for r in rows] for k in _VALUES}, "rgb": images, "depth": depth}
    return pa.table([columns[f.name] for f in schema], schema=schema)


def depth_arrays(column: pa.Array | pa.ChunkedArray) -> list[np.ndarray]:
    """A version 3 ``depth`` column (lists of lists, or the ``Array2D`` extension over them when
    ``datasets`` is imported) as one stored (H, W) array per row."""
    out = []
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        if isinstance(chunk, pa.ExtensionArray):
            chunk = chunk.storage
        heights = chunk.value_lengths().to_numpy(zero_copy_only=False)
        lines = chunk.flatten()
        widths = lines.value_lengths().to_numpy(zero_copy_only=False)
        values = lines.flatten().to_numpy(zero_copy_only=False)
        line, pos = 0, 0
        for h in heights:
            w = int(widths[line]) if h else 0
            if h and (widths[line : line + h] != w).any():
                raise DagError(f"depth rows of unequal length: {widths[line : line + h].tolist()}")
            out.append(values[pos : pos + h * w].reshape(h, w))
            line, pos = line + h, pos + h * w
    return out


def row_sample(row: dict[str, Any], path: Path) -> Sample:
    """Decode one Parquet row into a :class:`Sample`; fields not read stay None/default.

    ``rgb`` is PNG bytes or (version 3) the ``Image`` struct; ``depth`` raw bytes or (version 3)
    the stored array of :func:`depth_arrays`."""
    where = f"{path} row {row['id']!r}"
    h, w = row["height"], row["width"]
    png = row.get("rgb")
    png = png["bytes"] if isinstance(png, dict) else png
    rgb = _decode_png(png, h, w, where) if "rgb" in row else None
    depth = None
    if "depth" in row:
        try:
            stored = row["depth"]
            if isinstance(stored, np.ndarray):
                if stored.shape != (h, w):
                    raise DagError(f"depth is {stored.shape}, expected ({h}, {w})")
                depth = depth_metres(stored, row["depth_dtype"])
            else:
                depth = decode_depth(stored, row["depth_dtype"], h, w)
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
