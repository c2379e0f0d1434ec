"""One schema and IO layer for every image–depth dataset: Parquet shards via pyarrow.

Labelled subsets, world data and the synthetic outputs of depth-aware guided sampling (DAG,
Kim et al., arXiv 2212.08861) all share this layout. A dataset is a directory::

    part-00000.parquet      one row per sample, ~``row_group_size`` rows per row group
    part-00001.parquet
    ...
    _manifest.json          schema version, per-shard file/rows/sha256, total rows, depth dtype

Columns (:data:`SCHEMA`): ``id`` string; ``rgb`` PNG bytes (lossless); ``depth`` raw
little-endian bytes in ``depth_dtype`` ∈ {``float16``, ``float32``, ``uint16mm``}; ``height``,
``width`` int32; ``seed`` int64 (nullable); ``source`` string; ``meta`` a JSON object for everything
else (guidance scales, sampler, model hashes...). Depth is never 8-bit. ``uint16mm`` stores
``round(metres * 1000)`` clipped to 0..65535, with 0 meaning invalid/missing (read back as 0.0 m).
Every read returns depth as float32 metres.

Writes are atomic: a shard is written to ``.part-XXXXX.parquet.tmp-<pid>`` in the same directory,
fsynced, then renamed with :func:`os.replace`; a crash leaves at most a dot-file that every reader
ignores. Existing shards are never replaced unless ``overwrite=True``. Resumable synthesis writes
shard ``k`` with :func:`write_shard`, asks :func:`completed_shards` what is done, and finishes with
:func:`write_manifest`.

The manifest is named ``_manifest.json`` (not ``manifest.json``) because pyarrow dataset discovery
skips names starting with ``.`` or ``_`` but tries to parse every other file as Parquet, so a plain
``manifest.json`` breaks ``pandas.read_parquet(directory)``. Interop with other tools::

    pandas.read_parquet("data/synth")                       # the directory as it is
    datasets.load_dataset("parquet", data_files="data/synth/part-*.parquet")  # Hugging Face

Both see the raw columns (PNG bytes, depth bytes); decode with :func:`decode_depth` and pillow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch
from PIL import Image

from dag_core.errors import DagError

SCHEMA_VERSION = 1
MANIFEST_NAME = "_manifest.json"
DEPTH_DTYPES = ("float16", "float32", "uint16mm")
SCHEMA = pa.schema(
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
SAMPLE_FIELDS = ("rgb", "depth", "seed", "source", "meta")
_SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
_NUMPY_DTYPES = {"float16": "<f2", "float32": "<f4", "uint16mm": "<u2"}
_HASH_CHUNK = 1 << 20


@dataclass
class Sample:
    """One image–depth pair: ``rgb`` uint8 (H, W, 3), ``depth`` float32 metres (H, W)."""

    id: str
    rgb: np.ndarray
    depth: np.ndarray
    seed: int | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _check_dtype(dtype: str) -> None:
    """Raise :class:`DagError` unless ``dtype`` is one of :data:`DEPTH_DTYPES`."""
    if dtype not in DEPTH_DTYPES:
        raise DagError(f"unknown depth_dtype {dtype!r}; expected one of {', '.join(DEPTH_DTYPES)}")


def encode_depth(depth: np.ndarray, dtype: str) -> bytes:
    """Encode a (H, W) depth map in metres as raw little-endian bytes of ``dtype``.

    ``float16``/``float32`` cast the metres; ``uint16mm`` stores ``round(metres * 1000)`` clipped
    to 0..65535, with non-finite values stored as 0 (invalid/missing).
    """
    _check_dtype(dtype)
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
    _check_dtype(dtype)
    np_dtype = np.dtype(_NUMPY_DTYPES[dtype])
    if len(buf) != height * width * np_dtype.itemsize:
        raise DagError(f"depth buffer of {len(buf)} bytes does not fit {height}x{width} {dtype}")
    arr = np.frombuffer(buf, dtype=np_dtype).reshape(height, width)
    if dtype == "uint16mm":
        return arr.astype(np.float32) / np.float32(1000.0)
    return arr.astype(np.float32)


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``part-00000.parquet``, ``part-00001.parquet``, ..."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise DagError(f"shard index must be a non-negative int, got {index!r}")
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


def _sample_row(sample: Sample, depth_dtype: str) -> dict[str, Any]:
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
    }


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` via a dot-prefixed temp file in the same directory, fsync, os.replace."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_shard(
    directory: str | Path,
    index: int,
    samples: Sequence[Sample],
    *,
    depth_dtype: str = "float16",
    row_group_size: int = 100,
    overwrite: bool = False,
) -> Path:
    """Atomically write ``samples`` as shard ``index`` of the dataset in ``directory``.

    Refuses (DagError) if the shard file exists unless ``overwrite=True``; the old file stays in
    place until the new one is complete. Does not touch the manifest (see :func:`write_manifest`).
    """
    _check_dtype(depth_dtype)
    if row_group_size < 1:
        raise DagError(f"row_group_size must be >= 1, got {row_group_size}")
    directory = Path(directory)
    path = directory / shard_name(index)
    if path.exists() and not overwrite:
        raise DagError(f"shard {path} already exists; pass overwrite=True to replace it")
    if not samples:
        raise DagError(f"no samples to write to shard {path}")
    rows = [_sample_row(s, depth_dtype) for s in samples]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DagError(f"duplicate sample id {dup!r} in shard {path}")
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    directory.mkdir(parents=True, exist_ok=True)

    def write(fh: Any) -> None:
        pq.write_table(
            table,
            fh,
            row_group_size=row_group_size,
            compression="zstd",
            use_dictionary=["depth_dtype", "source"],
            write_statistics=["id", "height", "width", "seed", "depth_dtype", "source"],
        )

    _atomic_write(path, write)
    return path


def _shard_files(directory: Path) -> dict[int, Path]:
    """Shard files present in ``directory`` by index (temp and other files ignored)."""
    found = {}
    for entry in directory.iterdir():
        match = _SHARD_RE.match(entry.name)
        if match and entry.is_file():
            found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


def _open_shard(path: Path) -> pq.ParquetFile:
    """Open a shard and check its footer and schema; DagError naming the file if it is bad."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DagError(f"corrupt shard {path}: {exc}") from exc
    meta = pf.metadata
    if not pf.schema_arrow.equals(SCHEMA):
        raise DagError(f"shard {path} does not have the dag_core.shards schema")
    if meta.num_rows < 1 or sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) != (
        meta.num_rows
    ):
        raise DagError(f"corrupt shard {path}: row groups do not add up to {meta.num_rows} rows")
    return pf


def completed_shards(directory: str | Path) -> set[int]:
    """Indices of the shards in ``directory`` that are complete (empty set if it does not exist).

    A shard is complete when its Parquet footer opens, its schema is :data:`SCHEMA` and its row
    groups add up to the footer's row count (the footer is written last, so a whole footer means a
    whole file). The manifest is not consulted: it may be stale between :func:`write_shard` and
    :func:`write_manifest`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    done = set()
    for index, path in _shard_files(directory).items():
        try:
            _open_shard(path)
        except DagError:
            continue
        done.add(index)
    return done


def _sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _shard_depth_dtype(pf: pq.ParquetFile, path: Path) -> str:
    """The one depth dtype used by a shard (DagError if it mixes several)."""
    dtypes = set(pf.read(columns=["depth_dtype"]).column("depth_dtype").unique().to_pylist())
    if len(dtypes) != 1:
        raise DagError(f"shard {path} mixes depth dtypes {sorted(dtypes)}")
    return dtypes.pop()


def write_manifest(directory: str | Path) -> dict:
    """Rebuild ``_manifest.json`` from the complete shards on disk, atomically; return it.

    Incomplete shard files (see :func:`completed_shards`) are left out. DagError if there are no
    complete shards or they disagree on the depth dtype.
    """
    directory = Path(directory)
    done = completed_shards(directory)
    if not done:
        raise DagError(f"no complete shards in {directory}")
    files = _shard_files(directory)
    shards, dtypes = [], {}
    for index in sorted(done):
        path = files[index]
        pf = _open_shard(path)
        dtypes[path.name] = _shard_depth_dtype(pf, path)
        shards.append({"file": path.name, "rows": pf.metadata.num_rows, "sha256": _sha256(path)})
    if len(set(dtypes.values())) != 1:
        raise DagError(f"shards in {directory} mix depth dtypes: {json.dumps(dtypes)}")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "depth_dtype": next(iter(dtypes.values())),
        "total_rows": sum(s["rows"] for s in shards),
        "shards": shards,
    }
    text = json.dumps(manifest, indent=2) + "\n"
    _atomic_write(directory / MANIFEST_NAME, lambda fh: fh.write(text.encode()))
    return manifest


def write_dataset(
    directory: str | Path,
    samples: Iterable[Sample],
    *,
    shard_size: int = 500,
    depth_dtype: str = "float16",
    row_group_size: int = 100,
) -> dict:
    """Split ``samples`` into shards of ``shard_size`` rows, write each atomically, then a manifest.

    Streams: only one shard's samples are held in memory. Sample ids must be unique. Refuses
    (DagError) to overwrite existing shards. Returns the manifest.
    """
    if shard_size < 1:
        raise DagError(f"shard_size must be >= 1, got {shard_size}")
    _check_dtype(depth_dtype)
    seen: set[str] = set()
    chunk: list[Sample] = []
    index = 0

    def flush() -> None:
        write_shard(directory, index, chunk, depth_dtype=depth_dtype, row_group_size=row_group_size)

    for sample in samples:
        if sample.id in seen:
            raise DagError(f"duplicate sample id {sample.id!r}")
        seen.add(sample.id)
        chunk.append(sample)
        if len(chunk) == shard_size:
            flush()
            chunk, index = [], index + 1
    if chunk:
        flush()
    if not seen:
        raise DagError(f"no samples to write to {directory}")
    return write_manifest(directory)


def _dataset_shards(directory: str | Path) -> list[Path]:
    """All shard files of a dataset in index order, each checked to open (DagError otherwise)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DagError(f"dataset directory {directory} does not exist")
    paths = list(_shard_files(directory).values())
    if not paths:
        raise DagError(f"dataset directory {directory} holds no part-*.parquet shards")
    for path in paths:
        _open_shard(path)
    return paths


def _arrow_dataset(paths: list[Path]) -> ds.Dataset:
    """A pyarrow dataset over ``paths``, whose fragments keep the given order."""
    return ds.dataset([str(p) for p in paths], schema=SCHEMA, format="parquet")


def _iter_batches(paths: list[Path], columns: list[str]) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Record batches of ``columns`` over ``paths`` in order; DagError naming a corrupt file."""
    for path, fragment in zip(paths, _arrow_dataset(paths).get_fragments(), strict=True):
        try:
            yield from ((path, batch) for batch in fragment.to_batches(columns=columns))
        except (OSError, pa.ArrowException) as exc:
            raise DagError(f"corrupt shard {path}: {exc}") from exc


def _row_sample(row: dict[str, Any], path: Path) -> Sample:
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
    )


def read_samples(
    directory: str | Path, *, columns: Sequence[str] | None = None
) -> Iterator[Sample]:
    """Yield every sample of the dataset, shard by shard in index order, decoded.

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
    for path, batch in _iter_batches(_dataset_shards(directory), arrow_cols):
        for row in batch.to_pylist():
            yield _row_sample(row, path)


def read_table(directory: str | Path) -> pa.Table:
    """All shards of the dataset as one raw :data:`SCHEMA` table, rows in shard order."""
    paths = _dataset_shards(directory)
    batches = [batch for _, batch in _iter_batches(paths, SCHEMA.names)]
    return pa.Table.from_batches(batches, schema=SCHEMA)


def verify_dataset(directory: str | Path) -> dict:
    """Check the manifest against the files; return it, or raise DagError naming the bad file.

    Every listed shard must be present with its row count and sha256, no shard may be unlisted,
    and the total must add up.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DagError(f"missing manifest {manifest_path}")
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = {s["file"]: s for s in manifest["shards"]}
        total = manifest["total_rows"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DagError(f"malformed manifest {manifest_path}: {exc}") from exc
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DagError(
            f"{manifest_path}: unsupported schema_version {manifest.get('schema_version')!r}"
        )
    on_disk = {p.name: p for p in _dataset_shards(directory)}
    unlisted = sorted(set(on_disk) - set(listed))
    if unlisted:
        raise DagError(f"shard {on_disk[unlisted[0]]} is not listed in {manifest_path}")
    for name, entry in listed.items():
        path = directory / name
        if name not in on_disk:
            raise DagError(f"shard {path} listed in {manifest_path} is missing")
        if _sha256(path) != entry["sha256"]:
            raise DagError(f"checksum mismatch for {path}")
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != entry["rows"]:
            raise DagError(f"{path} has {rows} rows, manifest says {entry['rows']}")
    if sum(s["rows"] for s in listed.values()) != total:
        raise DagError(f"{manifest_path}: total_rows {total} != sum of shard rows")
    return manifest


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
    ) -> None:
        """Open the dataset in ``directory`` (DagError if missing, empty or corrupt)."""
        super().__init__()
        self.paths = _dataset_shards(directory)
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
        for path, batch in _iter_batches(paths, columns):
            for row in batch.to_pylist():
                sample = _row_sample(row, path)
                item = {
                    "id": sample.id,
                    "image": torch.from_numpy(sample.rgb).permute(2, 0, 1).float() / 127.5 - 1.0,
                    "depth": torch.from_numpy(sample.depth).unsqueeze(0),
                    "seed": -1 if sample.seed is None else sample.seed,
                }
                yield item if self.transform is None else self.transform(item)


def load_tensors(
    directory: str | Path, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A small dataset (e.g. the ~100-pair labelled subset) in memory, in shard order.

    Returns ``(images, depth)``: float32 (N, 3, H, W) in [-1, 1] and float32 (N, 1, H, W) metres.
    ``limit`` keeps the first ``limit`` rows.
    """
    images, depths = [], []
    for item in ShardDataset(directory):
        if limit is not None and len(images) >= limit:
            break
        images.append(item["image"])
        depths.append(item["depth"])
    return torch.stack(images), torch.stack(depths)
