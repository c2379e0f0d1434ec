"""Keep each finished unit of an interrupted downstream run, so a rerun does only what is missing.

The downstream stage trains many nets (the 2k profile: 21 nets, about an hour on 2 cores); an
interruption must not cost the nets already trained. A run works in a resume folder beside its
output, ``.<models_dir name>.resume/`` (:func:`resume_dir`), which it holds locked for as long as
it runs (:func:`held_resume_dir`: one run per output at a time; the lock dies with its process,
``kill -9`` included). Each finished unit — a net ``<set>/seed-<seed>``, a re-labelled set
``_relabelled/<set>`` — gets a record ``.<unit>.done.json`` written after it (:func:`mark_done`):
the unit's key (:func:`unit_key`: everything it was made from — its settings and the sha256 of
the data and models it read, :func:`input_digest`) and the sha256 of each of its files, plus any
file it leaves for a later unit (the branch-step state a ``finetune`` net continues). A rerun
keeps a unit whose record has the current key and whose files verify (:func:`is_done`) and redoes
every other; training is deterministic, so kept nets are the bytes an uninterrupted run makes.
The stage removes the folder once its output is in place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dag_core.atomic import write_text_atomic
from dag_core.errors import DagError
from dag_core.shards import MANIFEST_NAME
from dag_core.shards.integrity import sha256_file

RESUME_SUFFIX = ".resume"


def resume_dir(models_dir: str | Path) -> Path:
    """The hidden resume folder of a stage output: ``<parent>/.<name>.resume``."""
    models_dir = Path(models_dir)
    return models_dir.parent / f".{models_dir.name}{RESUME_SUFFIX}"


@contextmanager
def held_resume_dir(models_dir: str | Path) -> Iterator[Path]:
    """Create (or reopen) the resume folder of ``models_dir`` and hold it locked for the block.

    DagError, before anything is written, when another live run holds it (``flock``: released
    by the kernel when its holder exits, however it exits)."""
    work = resume_dir(models_dir)
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DagError(
                f"another run is writing {models_dir} (it holds {work}); wait for it to finish"
            ) from None
        yield work
    finally:
        os.close(fd)


def input_digest(path: str | Path | None) -> str | None:
    """The sha256 that names what a unit read at ``path``: a file's bytes; a shard dataset's
    manifest (which lists every shard's sha256); else every file of the folder, by name."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if (path / MANIFEST_NAME).is_file():
        return sha256_file(path / MANIFEST_NAME)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def unit_key(spec: dict[str, Any]) -> str:
    """The key of a unit made from ``spec`` (settings and input digests; JSON-serialisable)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _record(unit: Path) -> Path:
    return unit.with_name(f".{unit.name}.done.json")


def _files(unit: Path, extra: Iterable[str | Path]) -> dict[str, str]:
    """sha256 of every file of ``unit`` (and of ``extra`` files), by path relative to its parent."""
    files = sorted(p for p in unit.rglob("*") if p.is_file()) + [Path(e) for e in extra]
    return {os.path.relpath(f, unit.parent): sha256_file(f) for f in files}


def mark_done(unit: str | Path, key: str, extra: Iterable[str | Path] = ()) -> None:
    """Record that ``unit`` (a folder, written whole) is finished with ``key``; ``extra``: files
    outside it that a later unit needs, verified with it."""
    unit = Path(unit)
    record = {"key": key, "files": _files(unit, extra)}
    write_text_atomic(_record(unit), json.dumps(record, indent=2, sort_keys=True) + "\n")


def is_done(unit: str | Path, key: str) -> bool:
    """Whether ``unit`` was finished with ``key`` and every file it recorded is there unchanged
    (a unit with a missing, foreign or damaged record, or a damaged file, is redone)."""
    unit = Path(unit)
    try:
        record = json.loads(_record(unit).read_text())
        if record["key"] != key or not unit.is_dir():
            return False
        return all(
            sha256_file(unit.parent / name) == digest for name, digest in record["files"].items()
        ) and set(record["files"]) >= set(_files(unit, ()))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def forget(unit: str | Path) -> None:
    """Drop ``unit``'s record (before it is redone: a half-redone unit is never taken as done)."""
    _record(Path(unit)).unlink(missing_ok=True)
