"""What a stopped run keeps: finished units and training snapshots, so a rerun does only the rest.

Long stages work in a resume folder beside their output, ``.<output name>.resume/``
(:func:`resume_dir`), held locked while they run (:func:`held_resume_dir`: one run per output at
a time; the lock dies with its process, ``kill -9`` included), and remove it once the output is in
place. Two kinds of progress are kept there:

* **Finished units** (the downstream stage's nets and re-labelled sets: 21 nets, about an hour on
  2 cores in the 2k profile). Each gets a record ``.<unit>.done.json`` written after it
  (:func:`mark_done`): the unit's key (:func:`unit_key`: everything it was made from — settings and
  the sha256 of the data and models it read, :func:`input_digest`) and the sha256 of each of its
  files, plus any file it leaves for a later unit (the branch-step state a ``finetune`` net
  continues). A rerun keeps a unit whose record has the current key and whose files verify
  (:func:`is_done`) and redoes every other.
* **Training snapshots** (:class:`TrainState`: the depth prior's and the heads' loops): the whole
  state of a loop — step, weights, optimiser, schedule, the generator its noise is drawn from, the
  log rows — saved atomically at most every :data:`SNAPSHOT_EVERY_S` seconds (environment
  ``DAG_SNAPSHOT_EVERY_S``) with the run's key; a rerun with the same key continues after it.

Training and labelling are deterministic (their randomness is in that state or indexed by step),
so a resumed run ends with the bytes of an uninterrupted one. (Synthesis resumes shard by shard:
:mod:`dag_core.resume`.)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from dag_core.atomic import atomic_path, write_text_atomic
from dag_core.errors import DagError
from dag_core.interrupt import reporting_progress
from dag_core.shards import MANIFEST_NAME
from dag_core.shards.integrity import sha256_file

RESUME_SUFFIX = ".resume"
#: the longest a training loop runs between snapshots (seconds; DAG_SNAPSHOT_EVERY_S overrides)
SNAPSHOT_EVERY_S = 60.0


def resume_dir(models_dir: str | Path) -> Path:
    """The hidden resume folder of a stage output: ``<parent>/.<name>.resume``."""
    models_dir = Path(models_dir)
    return models_dir.parent / f".{models_dir.name}{RESUME_SUFFIX}"


@contextmanager
def held_resume_dir(models_dir: str | Path) -> Iterator[Path]:
    """Create (or reopen) the resume folder of ``models_dir`` and hold it locked for the block
    (its empty folders are removed at the end: a run that kept nothing leaves nothing).

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
        for folder in [*sorted(work.rglob("*"), reverse=True), work]:  # nothing kept: no litter
            if folder.is_dir():
                with suppress(OSError):  # not empty: it holds what a rerun keeps
                    folder.rmdir()
        os.close(fd)  # the lock goes last


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


class TrainState:
    """A training loop's snapshot file ``path``, valid for the run whose key is ``key``.

    The loop calls :meth:`load` once (its last snapshot, or None: start from step 0) and
    :meth:`save` after a step whenever :meth:`due`; :func:`training_snapshot` removes it once the
    stage's output is in place. ``every_s``: the longest time between snapshots (default
    :data:`SNAPSHOT_EVERY_S`, or ``DAG_SNAPSHOT_EVERY_S``; 0 saves after every step)."""

    def __init__(self, path: str | Path, key: str, every_s: float | None = None) -> None:
        self.path, self.key = Path(path), key
        if every_s is None:
            every_s = float(os.environ.get("DAG_SNAPSHOT_EVERY_S", SNAPSHOT_EVERY_S))
        self.every_s = every_s
        self.saved_step = 0
        self._last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The saved state of this run (None when there is none, it is another run's, or it
        cannot be read: the loop then starts from step 0)."""
        import torch

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # missing or damaged: start over (a snapshot is written whole)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            return None
        self.saved_step = int(state["step"])
        return state

    def due(self) -> bool:
        """Whether the next snapshot is due."""
        return time.monotonic() - self._last >= self.every_s

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (it must hold ``step``: steps done) atomically as this run's snapshot."""
        import torch

        with atomic_path(self.path) as tmp:
            torch.save({**state, "key": self.key}, tmp)
        self.saved_step = int(state["step"])
        self._last = time.monotonic()


@contextmanager
def training_snapshot(
    out_dir: str | Path, key: dict[str, Any], steps: int, what: str
) -> Iterator[TrainState]:
    """The :class:`TrainState` of a stage's ``what`` training loop of ``steps`` steps, kept in
    ``out_dir``'s held resume folder under the key of ``key`` (settings and input digests). A run
    stopped in the block says ``k/steps <what> training steps saved``; when the block (which puts
    the output in place) succeeds, the resume folder goes."""
    with held_resume_dir(out_dir) as work:
        snapshot = TrainState(work / f"{what}-state.pt", unit_key(key))

        def saved() -> str | None:
            done = snapshot.saved_step
            return f"{done}/{steps} {what} training steps saved" if done else None

        with reporting_progress(saved):
            yield snapshot
        shutil.rmtree(work, ignore_errors=True)
