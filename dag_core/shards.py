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
    except OSError as exc:
        if exc.filename is None:  # e.g. a full disk: name the file being written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
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
    digest = _sha256(path)
    _atomic_write(_sidecar(path), lambda fh: fh.write(f"{digest}  {path.name}\n".encode()))
    return path


def _sidecar(path: Path) -> Path:
    """The checksum file ``.part-XXXXX.parquet.sha256`` written right after shard ``path``."""
    return path.with_name(f".{path.name}.sha256")


def _read_manifest(directory: Path) -> dict | None:
    """The parsed manifest of ``directory`` (None if absent; DagError if malformed)."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        {s["file"]: (s["rows"], s["sha256"]) for s in manifest["shards"]}
        int(manifest["total_rows"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DagError(f"malformed manifest {manifest_path}: {exc}") from exc
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DagError(
            f"{manifest_path}: unsupported schema_version {manifest.get('schema_version')!r}"
        )
    return manifest


def _recorded_digest(path: Path, manifest: dict | None) -> str | None:
    """The sha256 recorded for shard ``path``: its sidecar (newest), else the manifest entry."""
    sidecar = _sidecar(path)
    if sidecar.is_file():
        return sidecar.read_text().split(maxsplit=1)[0] if sidecar.stat().st_size else None
    for entry in (manifest or {}).get("shards", []):
        if entry["file"] == path.name:
            return str(entry["sha256"])
    return None


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
    """Indices of the shards in ``directory`` whose content verifies (empty set if no directory).

    A shard is complete when its Parquet footer opens with :data:`SCHEMA`, its row groups add up
    to the footer's row count, AND its sha256 equals the one recorded when it was written (its
    ``.part-XXXXX.parquet.sha256`` sidecar, or else its ``_manifest.json`` entry). A readable footer
    alone proves nothing about the bytes before it: a shard damaged mid-file, or one without a
    recorded checksum, is not complete, so a resume renders it again instead of blessing it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    manifest = _manifest_or_none(directory)
    done = set()
    for index, path in _shard_files(directory).items():
        try:
            _open_shard(path)
        except DagError:
            continue
        recorded = _recorded_digest(path, manifest)
        if recorded is not None and recorded == _sha256(path):
            done.add(index)
    return done


def _manifest_or_none(directory: Path) -> dict | None:
    """Like :func:`_read_manifest`, but a malformed manifest counts as none (resume, rebuild)."""
    try:
        return _read_manifest(directory)
    except DagError:
        return None


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

    Shards whose content does not verify (see :func:`completed_shards`) are left out, never
    blessed. DagError if there are no complete shards or they disagree on the depth dtype.
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


def _dataset_shards(directory: str | Path, verify: bool = True) -> list[Path]:
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
    paths = _dataset_shards(directory, verify)  # before the first sample is yielded
    return _read_rows(paths, arrow_cols)


def _read_rows(paths: list[Path], arrow_cols: list[str]) -> Iterator[Sample]:
    for path, batch in _iter_batches(paths, arrow_cols):
        for row in batch.to_pylist():
            yield _row_sample(row, path)


def read_table(directory: str | Path, *, verify: bool = True) -> pa.Table:
    """All shards of the dataset as one raw :data:`SCHEMA` table, rows in shard order.

    ``verify``: as in :func:`read_samples`. Use this (or ``read_table(d).to_pandas()``) rather
    than ``pandas.read_parquet(d)``, which reads whatever files are there.
    """
    paths = _dataset_shards(directory, verify)
    batches = [batch for _, batch in _iter_batches(paths, SCHEMA.names)]
    return pa.Table.from_batches(batches, schema=SCHEMA)


def dataset_problems(directory: str | Path, *, checksums: bool = True) -> list[str]:
    """Everything wrong with the dataset in ``directory``, one line each (empty: it is whole).

    Whole means: ``_manifest.json`` exists (it is written only after every shard is), every shard
    it lists is present, opens, has the listed row count and (``checksums``) sha256, no shard on
    disk is unlisted, and the rows add up to ``total_rows``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return [f"dataset directory {directory} does not exist"]
    manifest_path = directory / MANIFEST_NAME
    try:
        manifest = _read_manifest(directory)
    except DagError as exc:
        return [str(exc)]
    files = {p.name: p for p in _shard_files(directory).values()}
    if manifest is None:
        if not files:
            return [
                f"dataset directory {directory} holds no part-*.parquet shards "
                f"(missing manifest {manifest_path})"
            ]
        return [
            f"dataset {directory} is incomplete: missing manifest {manifest_path} (the run that "
            f"wrote its {len(files)} shard(s) did not finish; rerun its stage)"
        ]
    problems = []
    listed = {s["file"]: s for s in manifest["shards"]}
    for name in sorted(set(files) | set(listed)):
        path, entry = directory / name, listed.get(name)
        if entry is None:
            problems.append(f"shard {path} is not listed in {manifest_path}")
            continue
        if name not in files:
            problems.append(f"shard {path} listed in {manifest_path} is missing")
            continue
        try:
            rows = _open_shard(path).metadata.num_rows
        except DagError as exc:
            problems.append(str(exc))
            continue
        if checksums and _sha256(path) != entry["sha256"]:
            problems.append(f"checksum mismatch for {path} (damaged or changed since written)")
        elif rows != entry["rows"]:
            problems.append(f"{path} has {rows} rows, manifest says {entry['rows']}")
    if sum(s["rows"] for s in listed.values()) != manifest["total_rows"]:
        total = manifest["total_rows"]
        problems.append(f"{manifest_path}: total_rows {total} != sum of shard rows")
    return problems


def verify_dataset(directory: str | Path, *, checksums: bool = True) -> dict:
    """Check the manifest against the files; return it, or raise DagError naming the bad file.

    Every listed shard must be present with its row count and sha256, no shard may be unlisted,
    and the total must add up (see :func:`dataset_problems`).
    """
    problems = dataset_problems(directory, checksums=checksums)
    if problems:
        raise DagError(problems[0])
    manifest = _read_manifest(Path(directory))
    assert manifest is not None
    return manifest


def find_datasets(root: str | Path, max_depth: int = 3) -> list[Path]:
    """Dataset directories at or below ``root`` (those holding shards or a manifest)."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return found
    if (root / MANIFEST_NAME).is_file() or _shard_files(root):
        return [root]
    if max_depth > 0:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._"):
            found.extend(find_datasets(sub, max_depth - 1))
    return found


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

        ``verify`` (default) checks it against its manifest first (:func:`verify_dataset`).
        """
        super().__init__()
        self.paths = _dataset_shards(directory, verify)
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


def read_pandas(directory: str | Path, *, verify: bool = True) -> Any:
    """The raw rows as a pandas DataFrame, after the same check as :func:`read_table`."""
    return read_table(directory, verify=verify).to_pandas()


def main(argv: list[str] | None = None) -> int:
    """``python -m dag_core.shards verify DIR...``: report whether each dataset is whole.

    DIR may be one dataset or a folder of them (e.g. ``data/synthetic``). Prints one ``ok`` line
    per whole dataset and one line per problem; ends with one ``error:`` line on stderr and exit
    status 2 if any dataset is incomplete or damaged.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m dag_core.shards")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check datasets against their manifests")
    verify.add_argument("dirs", nargs="+", help="a dataset folder, or a folder of datasets")
    args = parser.parse_args(argv)
    bad: list[str] = []
    for root in args.dirs:
        datasets = find_datasets(root) or [Path(root)]
        for directory in datasets:
            problems = dataset_problems(directory)
            if problems:
                bad.append(f"{directory}: {problems[0]}")
                for line in problems:
                    print(f"BAD  {directory}: {line}")
            else:
                m = _read_manifest(directory) or {}
                print(
                    f"ok   {directory}: {len(m['shards'])} shard(s), {m['total_rows']} rows, "
                    f"depth {m['depth_dtype']}"
                )
    if bad:
        more = f" (and {len(bad) - 1} more dataset(s))" if len(bad) > 1 else ""
        print(f"error: {bad[0]}{more}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
