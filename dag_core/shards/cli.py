"""``python -m dag_core.shards verify DIR...``: report whether each dataset is whole.

Besides the datasets themselves (:func:`~dag_core.shards.integrity.dataset_problems`), the
check reads what a synthesis run meant to write: each variant folder's ``_spec.json`` says how
many shards it must hold, and an output folder's ``_run_spec.json`` names every variant. A run
that was interrupted leaves a variant with fewer verified shards than its spec and no
manifest — or no folder at all — and the command says so (``unfinished: k/n shards``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dag_core.shards.codec import MANIFEST_NAME
from dag_core.shards.integrity import (
    completed_shards,
    dataset_problems,
    find_datasets,
    read_manifest,
)

#: the spec record synthesis writes in each variant folder (dag_core.configs.synthesis.SPEC_NAME)
VARIANT_SPEC = "_spec.json"
#: the run's spec synthesis writes in its output folder, naming every variant
RUN_SPEC = "_run_spec.json"


def _read_spec(path: Path) -> dict[str, Any] | None:
    """A synthesis spec record (None when absent or unreadable: then nothing is expected)."""
    try:
        spec = json.loads(path.read_text())
        int(spec["num_samples"]), int(spec["shard_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return spec if isinstance(spec, dict) and int(spec["shard_size"]) > 0 else None


def _num_shards(spec: dict[str, Any]) -> int:
    return -(-int(spec["num_samples"]) // int(spec["shard_size"]))


def _spec_folders(root: Path, max_depth: int = 3) -> list[Path]:
    """Folders at or below ``root`` (``.``/``_`` names skipped) holding a spec record."""
    if not root.is_dir():
        return []
    found = [root] if (root / VARIANT_SPEC).is_file() or (root / RUN_SPEC).is_file() else []
    if max_depth > 0:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._"):
            found.extend(_spec_folders(sub, max_depth - 1))
    return found


def unfinished(directory: Path) -> list[str]:
    """What a synthesis spec in ``directory`` asks for that is not there: a variant folder with
    fewer verified shards than its ``_spec.json`` and no manifest (or a manifest listing fewer),
    and the variants ``_run_spec.json`` names that have no folder at all."""
    problems = []
    spec = _read_spec(directory / VARIANT_SPEC)
    if spec is not None:
        n = _num_shards(spec)
        try:
            manifest = read_manifest(directory)
        except ValueError:
            manifest = None  # dataset_problems names a malformed manifest
        if manifest is None and not (directory / MANIFEST_NAME).exists():
            done = len(completed_shards(directory) & set(range(n)))
            problems.append(
                f"variant dataset {directory} is unfinished: {done}/{n} shards written and "
                "verified, no manifest (the run that writes it stopped; rerun it to resume)"
            )
        elif manifest is not None and len(manifest["shards"]) != n:
            problems.append(
                f"variant dataset {directory} is unfinished: its manifest lists "
                f"{len(manifest['shards'])} of the {n} shards {directory / VARIANT_SPEC} asks for"
            )
    run = _read_spec(directory / RUN_SPEC)
    if run is not None and isinstance(run.get("variants"), dict):
        n = _num_shards(run)
        for variant in run["variants"]:
            if not (directory / str(variant)).is_dir():
                problems.append(
                    f"variant dataset {directory / str(variant)} is unfinished: 0/{n} shards "
                    f"written, no folder (named in {directory / RUN_SPEC}; the run stopped "
                    "before it; rerun it to resume)"
                )
    return problems


def check_folder(directory: Path) -> list[str]:
    """Every problem of one folder: what its specs ask for, then the dataset itself."""
    expected = unfinished(directory)
    holds_data = (directory / MANIFEST_NAME).exists() or any(directory.glob("part-*.parquet"))
    if expected and not (directory / MANIFEST_NAME).exists():
        return expected  # dataset_problems would only repeat "missing manifest"
    if not holds_data and (directory / RUN_SPEC).is_file():
        return expected  # an output folder of variants, not a dataset
    return expected + dataset_problems(directory)


def main(argv: list[str] | None = None) -> int:
    """``python -m dag_core.shards verify DIR...``: report whether each dataset is whole.

    DIR may be one dataset or a folder of them (e.g. ``data/synthetic``). Prints one ``ok`` line
    per whole dataset and one line per problem — damaged, missing or unlisted shards, and
    synthesis variants left unfinished by an interrupted run (see the module doc); ends with one
    ``error:`` line on stderr and exit status 2 if anything is wrong.
    """
    parser = argparse.ArgumentParser(prog="python -m dag_core.shards")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check datasets against their manifests")
    verify.add_argument("dirs", nargs="+", help="a dataset folder, or a folder of datasets")
    args = parser.parse_args(argv)
    bad: list[str] = []
    for root in args.dirs:
        folders = sorted(set(find_datasets(root)) | set(_spec_folders(Path(root))))
        for directory in folders or [Path(root)]:
            problems = check_folder(directory)
            if problems:
                bad.append(f"{directory}: {problems[0]}")
                for line in problems:
                    print(f"BAD  {directory}: {line}")
            elif (directory / MANIFEST_NAME).is_file():
                m = read_manifest(directory) or {}
                print(
                    f"ok   {directory}: {len(m['shards'])} shard(s), {m['total_rows']} rows, "
                    f"depth {m['depth_dtype']}"
                )
    if bad:
        more = f" (and {len(bad) - 1} more dataset(s))" if len(bad) > 1 else ""
        print(f"error: {bad[0]}{more}", file=sys.stderr)
        return 2
    return 0
