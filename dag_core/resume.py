"""The resume policy of resumable synthesis: what a rerun keeps, redoes and clears.

A variant's dataset folder holds its spec record (``_spec.json``, :meth:`SynthesisSpec.
variant_spec`), its shards and, once whole, its manifest. :func:`prepare_variant_dir` keeps the
finished shards of the SAME spec (a crashed run resumes where it stopped, with the same bytes as
an uninterrupted run), redoes any shard whose checksum does not verify, and clears a folder that
holds another spec (its shards can never be part of this dataset). While shards are missing the
manifest is removed, so no reader takes the folder as a finished dataset.
:func:`finish_variant_dir` writes the manifest only when every shard verifies.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dag_core.atomic import write_text_atomic
from dag_core.errors import DagError
from dag_core.shards import MANIFEST_NAME, completed_shards, write_manifest
from dag_core.shards.card import CardInfo
from dag_core.shards.codec import SHARD_RE
from dag_core.shards.integrity import sidecar
from dag_core.synthesis import SPEC_NAME, spec_matches


@dataclass(frozen=True)
class ResumePlan:
    """What :func:`prepare_variant_dir` found: shards to render, shards kept, folder cleared."""

    todo: list[int]
    done: set[int]
    cleared: bool


def prepare_variant_dir(
    directory: str | Path, record: dict[str, Any], num_shards: int
) -> ResumePlan:
    """Make ``directory`` ready for the variant spec ``record`` with ``num_shards`` shards.

    Clears the folder if it holds another spec, writes ``record`` as ``_spec.json``, and returns
    the shards still to render (those that are missing or whose sha256 does not verify); when
    any are, the manifest is removed.
    """
    target = Path(directory)
    cleared = target.exists() and not spec_matches(target, record)
    if cleared:
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target / SPEC_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n")
    done = completed_shards(target)  # footer AND sha256 verified: damaged shards are redone
    todo = [k for k in range(num_shards) if k not in done]
    if todo:  # no longer whole: readers must not take it as a finished dataset meanwhile
        (target / MANIFEST_NAME).unlink(missing_ok=True)
    return ResumePlan(todo=todo, done=done & set(range(num_shards)), cleared=cleared)


def finish_variant_dir(
    directory: str | Path, num_shards: int, card: CardInfo | None = None
) -> dict:
    """Drop shards beyond ``num_shards`` (none in a clean run) and write the dataset card
    (``card``; None keeps the recorded one) and the manifest; return the manifest.

    DagError naming the shards that do not verify, if any of ``0 … num_shards-1`` does not.
    """
    for path in Path(directory).glob("part-*.parquet"):
        match = SHARD_RE.match(path.name)
        if match and int(match.group(1)) >= num_shards:
            path.unlink()
            sidecar(path).unlink(missing_ok=True)
    missing = sorted(set(range(num_shards)) - completed_shards(directory))
    if missing:
        raise DagError(f"{directory}: shard(s) {missing} did not verify after rendering; rerun")
    return write_manifest(directory, card)
