"""Write shard datasets: one atomic shard at a time, then the manifest.

A shard is written to ``.part-XXXXX.parquet.tmp-<pid>`` in the same directory, its sha256 is
recorded in the ``.part-XXXXX.parquet.sha256`` sidecar, and only then is it fsynced and renamed with
:func:`os.replace` (:func:`dag_core.atomic.atomic_path`): a shard visible under its final name is
complete, checksum included, so a reader (or a user watching the folder) that sees the file can rely
on it. A crash leaves at most dot-files that every reader ignores. Existing shards are never
replaced unless ``overwrite=True``. Resumable synthesis writes shard ``k`` with :func:`write_shard`,
asks :func:`~dag_core.shards.integrity.completed_shards` what is done, and finishes with
:func:`write_manifest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dag_core.atomic import atomic_path, write_text_atomic
from dag_core.errors import DagError
from dag_core.shards.card import CARD_NAME, CardInfo, render_card
from dag_core.shards.codec import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Sample,
    check_dtype,
    rows_table,
    sample_row,
    shard_name,
)
from dag_core.shards.integrity import (
    completed_shards,
    manifest_or_none,
    open_shard,
    sha256_file,
    shard_files,
    sidecar,
)


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
    place until the new one is complete (its sidecar already names the new bytes meanwhile, so
    the old file reads as damaged, never as whole, until the rename).
    Does not touch the manifest (see :func:`write_manifest`).
    """
    check_dtype(depth_dtype)
    if row_group_size < 1:
        raise DagError(f"row_group_size must be >= 1, got {row_group_size}")
    directory = Path(directory)
    path = directory / shard_name(index)
    if path.exists() and not overwrite:
        raise DagError(f"shard {path} already exists; pass overwrite=True to replace it")
    if not samples:
        raise DagError(f"no samples to write to shard {path}")
    rows = [sample_row(s, depth_dtype) for s in samples]
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DagError(f"duplicate sample id {dup!r} in shard {path}")
    table = rows_table(rows, depth_dtype)
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

    with atomic_path(path) as tmp:  # renamed to ``path`` only after its checksum is recorded
        with open(tmp, "wb") as fh:
            write(fh)
        try:
            write_text_atomic(sidecar(path), f"{sha256_file(tmp)}  {path.name}\n")
        except OSError as exc:  # named by the shard the user knows, not its hidden sidecar
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    return path


def _shard_depth_dtype(pf: pq.ParquetFile, path: Path) -> str:
    """The one depth dtype used by a shard (DagError if it mixes several)."""
    dtypes = set(pf.read(columns=["depth_dtype"]).column("depth_dtype").unique().to_pylist())
    if len(dtypes) != 1:
        raise DagError(f"shard {path} mixes depth dtypes {sorted(dtypes)}")
    return dtypes.pop()


def write_manifest(directory: str | Path, card: CardInfo | None = None) -> dict:
    """Rebuild the dataset card and ``_manifest.json`` from the complete shards on disk,
    atomically (card first; the manifest records its sha256); return the manifest.

    Shards whose content does not verify (see :func:`completed_shards`) are left out, never
    blessed. DagError if there are no complete shards or they disagree on the depth dtype.

    Args:
        directory: The dataset folder.
        card: What the card says beyond the shards' records (:class:`~dag_core.shards.card.
            CardInfo`); None keeps what the current manifest recorded (a default card if none).
            A card without ``quality`` keeps the recorded quality when it was measured on
            these very shards (same sha256s) and says the same otherwise: a rerun that renders
            nothing leaves the card as it was.
    """
    directory = Path(directory)
    before = manifest_or_none(directory) or {}
    recorded = before.get("card", {}).get("info")
    recorded = CardInfo(**recorded) if isinstance(recorded, dict) else None
    if card is None:
        card = recorded or CardInfo()
    done = completed_shards(directory)
    if not done:
        raise DagError(f"no complete shards in {directory}")
    files = shard_files(directory)
    shards, dtypes = [], {}
    for index in sorted(done):
        path = files[index]
        pf = open_shard(path)
        dtypes[path.name] = _shard_depth_dtype(pf, path)
        shards.append(
            {"file": path.name, "rows": pf.metadata.num_rows, "sha256": sha256_file(path)}
        )
    if len(set(dtypes.values())) != 1:
        raise DagError(f"shards in {directory} mix depth dtypes: {json.dumps(dtypes)}")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "depth_dtype": next(iter(dtypes.values())),
        "total_rows": sum(s["rows"] for s in shards),
        "shards": shards,
    }
    if (
        recorded is not None
        and not card.quality
        and before.get("shards") == shards
        and {**recorded.to_dict(), "quality": []} == card.to_dict()
    ):
        card = recorded
    text = render_card(directory, manifest, card)
    card_path = directory / CARD_NAME
    if not (card_path.is_file() and card_path.read_bytes() == text.encode()):  # a rerun: as is
        write_text_atomic(card_path, text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    manifest["card"] = {"file": CARD_NAME, "sha256": digest, "info": card.to_dict()}
    write_text_atomic(directory / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    return manifest


def update_card(directory: str | Path, **changes: Any) -> dict:
    """Re-render the dataset card with some :class:`~dag_core.shards.card.CardInfo` fields
    changed (e.g. ``quality`` measured after the shards were written) and the manifest with it;
    return the manifest."""
    directory = Path(directory)
    recorded = (manifest_or_none(directory) or {}).get("card", {}).get("info")
    info = CardInfo(**recorded) if isinstance(recorded, dict) else CardInfo()
    return write_manifest(directory, dataclasses.replace(info, **changes))


def write_dataset(
    directory: str | Path,
    samples: Iterable[Sample],
    *,
    shard_size: int = 500,
    depth_dtype: str = "float16",
    row_group_size: int = 100,
    card: CardInfo | None = None,
) -> dict:
    """Split ``samples`` into shards of ``shard_size`` rows, write each atomically, then the card
    (``card``: :class:`~dag_core.shards.card.CardInfo`, default a plain one) and the manifest.

    Streams: only one shard's samples are held in memory. Sample ids must be unique. Refuses
    (DagError) to overwrite existing shards. Returns the manifest.
    """
    if shard_size < 1:
        raise DagError(f"shard_size must be >= 1, got {shard_size}")
    check_dtype(depth_dtype)
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
    return write_manifest(directory, card or CardInfo())
