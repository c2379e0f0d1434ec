"""Is a shard dataset whole? Checksums, the manifest, and the checks every reader runs first.

Each shard ``part-XXXXX.parquet`` has a ``.part-XXXXX.parquet.sha256`` sidecar, written before the
shard is renamed into place (a visible shard always has its checksum); ``_manifest.json`` (written
last, by :func:`dag_core.shards.writer.write_manifest`) lists every shard with its rows and sha256.
A dataset is whole when the manifest exists, lists exactly the shards on disk, and every shard opens
with the schema of the manifest's ``schema_version`` (:data:`~dag_core.shards.codec.SCHEMAS`: the
current one, version 2 from before the ``datasets`` features, or version 1 from before the
``uncertainty`` column), has the listed row count and
sha256, and the rows add up (:func:`dataset_problems`). Only shards of the current schema count as
done for writers (:func:`completed_shards`), so a resumed run re-renders shards written before the
schema grew.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dag_core.errors import DagError
from dag_core.shards.card import CARD_NAME
from dag_core.shards.codec import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SCHEMAS,
    SHARD_RE,
    storage_schema,
)

_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar(path: Path) -> Path:
    """The checksum file ``.part-XXXXX.parquet.sha256`` of shard ``path`` (written before the
    shard is renamed into place)."""
    return path.with_name(f".{path.name}.sha256")


def read_manifest(directory: Path) -> dict | None:
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
    if manifest.get("schema_version") not in SCHEMAS:
        raise DagError(
            f"{manifest_path}: unsupported schema_version {manifest.get('schema_version')!r}"
        )
    return manifest


def manifest_or_none(directory: Path) -> dict | None:
    """Like :func:`read_manifest`, but a malformed manifest counts as none (resume, rebuild)."""
    try:
        return read_manifest(directory)
    except DagError:
        return None


def _recorded_digest(path: Path, manifest: dict | None) -> str | None:
    """The sha256 recorded for shard ``path``: its sidecar (newest), else the manifest entry."""
    checksum = sidecar(path)
    if checksum.is_file():
        return checksum.read_text().split(maxsplit=1)[0] if checksum.stat().st_size else None
    for entry in (manifest or {}).get("shards", []):
        if entry["file"] == path.name:
            return str(entry["sha256"])
    return None


def shard_files(directory: Path) -> dict[int, Path]:
    """Shard files present in ``directory`` by index (temp and other files ignored)."""
    found = {}
    for entry in directory.iterdir():
        match = SHARD_RE.match(entry.name)
        if match and entry.is_file():
            found[int(match.group(1))] = entry
    return dict(sorted(found.items()))


def shard_version(pf: pq.ParquetFile) -> int | None:
    """The schema version of an open shard (a key of :data:`SCHEMAS`), None if it has none."""
    schema = storage_schema(pf.schema_arrow)
    return next((v for v, forms in SCHEMAS.items() if any(schema.equals(f) for f in forms)), None)


def open_shard(path: Path, *, current: bool = False) -> pq.ParquetFile:
    """Open a shard and check its footer and schema (any version of :data:`SCHEMAS`; with
    ``current``, only :data:`SCHEMA_VERSION`); DagError naming the file if it is bad."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DagError(f"corrupt shard {path}: {exc}") from exc
    meta = pf.metadata
    version = shard_version(pf)
    if version is None:
        raise DagError(f"shard {path} does not have the dag_core.shards schema")
    if current and version != SCHEMA_VERSION:
        raise DagError(f"shard {path} has schema version {version}, not {SCHEMA_VERSION}")
    if meta.num_rows < 1 or sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) != (
        meta.num_rows
    ):
        raise DagError(f"corrupt shard {path}: row groups do not add up to {meta.num_rows} rows")
    return pf


def completed_shards(directory: str | Path) -> set[int]:
    """Indices of the shards in ``directory`` whose content verifies (empty set if no directory).

    A shard is complete when its Parquet footer opens with :data:`SCHEMA` (the current version:
    older shards are redone by a resume and never blessed by a new manifest), its row groups add up
    to the footer's row count, AND its sha256 equals the one recorded when it was written (its
    ``.part-XXXXX.parquet.sha256`` sidecar, or else its ``_manifest.json`` entry). A readable footer
    alone proves nothing about the bytes before it: a shard damaged mid-file, or one without a
    recorded checksum, is not complete, so a resume renders it again instead of blessing it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    manifest = manifest_or_none(directory)
    done = set()
    for index, path in shard_files(directory).items():
        try:
            open_shard(path, current=True)
        except DagError:
            continue
        recorded = _recorded_digest(path, manifest)
        if recorded is not None and recorded == sha256_file(path):
            done.add(index)
    return done


def dataset_problems(directory: str | Path, *, checksums: bool = True) -> list[str]:
    """Everything wrong with the dataset in ``directory``, one line each (empty: it is whole).

    Whole means: ``_manifest.json`` exists (it is written only after every shard is), every shard
    it lists is present, opens, has the listed row count and (``checksums``) sha256, no shard on
    disk is unlisted, the dataset card (``README.md``, schema version 3 on) is there with its
    recorded sha256, and the rows add up to ``total_rows``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return [f"dataset directory {directory} does not exist"]
    manifest_path = directory / MANIFEST_NAME
    try:
        manifest = read_manifest(directory)
    except DagError as exc:
        return [str(exc)]
    files = {p.name: p for p in shard_files(directory).values()}
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
            pf = open_shard(path)
        except DagError as exc:
            problems.append(str(exc))
            continue
        rows = pf.metadata.num_rows
        if shard_version(pf) != manifest["schema_version"]:
            problems.append(
                f"shard {path} has schema version {shard_version(pf)}, but {manifest_path} "
                f"says {manifest['schema_version']}"
            )
            continue
        if checksums and sha256_file(path) != entry["sha256"]:
            problems.append(f"checksum mismatch for {path} (damaged or changed since written)")
        elif rows != entry["rows"]:
            problems.append(f"{path} has {rows} rows, manifest says {entry['rows']}")
    problems += _card_problems(directory, manifest, checksums)
    if sum(s["rows"] for s in listed.values()) != manifest["total_rows"]:
        total = manifest["total_rows"]
        problems.append(f"{manifest_path}: total_rows {total} != sum of shard rows")
    return problems


def _card_problems(directory: Path, manifest: dict, checksums: bool) -> list[str]:
    """The dataset card's problems: from schema version 3 on, the manifest records it and it must
    be there with that sha256 (``checksums``); older datasets have none."""
    entry = manifest.get("card")
    if entry is None:
        if manifest["schema_version"] < 3:
            return []
        return [f"{directory / MANIFEST_NAME} records no dataset card ({CARD_NAME})"]
    path = directory / str(entry.get("file", CARD_NAME))
    if not path.is_file():
        return [f"dataset card {path} listed in {directory / MANIFEST_NAME} is missing"]
    if checksums and sha256_file(path) != entry.get("sha256"):
        return [f"checksum mismatch for dataset card {path} (changed since written)"]
    return []


def verify_dataset(directory: str | Path, *, checksums: bool = True) -> dict:
    """Check the manifest against the files; return it, or raise DagError naming the bad file.

    Every listed shard must be present with its row count and sha256, no shard may be unlisted,
    and the total must add up (see :func:`dataset_problems`).
    """
    problems = dataset_problems(directory, checksums=checksums)
    if problems:
        raise DagError(problems[0])
    manifest = read_manifest(Path(directory))
    assert manifest is not None
    return manifest


def find_datasets(root: str | Path, max_depth: int = 3) -> list[Path]:
    """Dataset directories at or below ``root`` (those holding shards or a manifest)."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return found
    if (root / MANIFEST_NAME).is_file() or shard_files(root):
        return [root]
    if max_depth > 0:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._"):
            found.extend(find_datasets(sub, max_depth - 1))
    return found
