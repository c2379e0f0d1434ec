"""The synthesis resume policy (prepare / finish a variant folder) without models or Prefect.

Finished shards of the same spec are kept, damaged ones redone, shards of another spec cleared;
the manifest is removed while a variant is unfinished and written only when every shard verifies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dag_core.errors import DagError
from dag_core.resume import ResumePlan, finish_variant_dir, prepare_variant_dir
from dag_core.shards import MANIFEST_NAME, Sample, shard_name, verify_dataset, write_shard
from dag_core.synthesis import SPEC_NAME, SynthesisSpec
from tasks.synthesize import finish_variant, prepare_variant


def _samples(start: int, n: int = 2) -> list[Sample]:
    rng = np.random.default_rng(start)
    return [
        Sample(
            id=f"dag-{i:08d}",
            rgb=rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
            depth=rng.uniform(1.0, 5.0, (4, 4)).astype(np.float32),
            seed=i,
        )
        for i in range(start, start + n)
    ]


def _spec(tmp_path: Path, seed: int = 0) -> tuple[str, SynthesisSpec]:
    spec = SynthesisSpec(num_samples=6, shard_size=2, seed=seed, variants={"dag": {"w_dc": 1.0}})
    path = tmp_path / f"spec-{seed}.json"
    path.write_text(json.dumps(spec.__dict__, indent=2, sort_keys=True) + "\n")
    return str(path), spec


def test_prepare_keeps_finished_shards_and_redoes_damaged_ones(tmp_path: Path) -> None:
    spec_path, spec = _spec(tmp_path)
    target = tmp_path / "dag"
    assert prepare_variant.fn(spec_path, "dag", str(target)) == [0, 1, 2]
    record = spec.variant_spec("dag")
    assert (target / SPEC_NAME).read_text() == json.dumps(record, indent=2, sort_keys=True) + "\n"
    for k in range(3):
        write_shard(target, k, _samples(2 * k))
    finish_variant.fn(str(target), 3)
    assert verify_dataset(target)["total_rows"] == 6
    assert prepare_variant.fn(spec_path, "dag", str(target)) == []
    assert (target / MANIFEST_NAME).is_file()  # whole: nothing to redo, the manifest stays

    data = bytearray((target / shard_name(1)).read_bytes())
    data[len(data) // 3] ^= 0xFF
    (target / shard_name(1)).write_bytes(bytes(data))
    assert prepare_variant.fn(spec_path, "dag", str(target)) == [1]
    assert not (target / MANIFEST_NAME).exists()  # unfinished: never read as whole
    with pytest.raises(DagError, match=r"shard\(s\) \[1\] did not verify"):
        finish_variant.fn(str(target), 3)
    write_shard(target, 1, _samples(2), overwrite=True)
    finish_variant.fn(str(target), 3)
    assert verify_dataset(target)["total_rows"] == 6


def test_prepare_clears_another_spec_and_finish_drops_extra_shards(tmp_path: Path) -> None:
    spec_path, _ = _spec(tmp_path)
    target = tmp_path / "dag"
    prepare_variant.fn(spec_path, "dag", str(target))
    for k in range(4):  # one shard beyond the spec (e.g. left by a larger run)
        write_shard(target, k, _samples(2 * k))
    finish_variant.fn(str(target), 3)
    assert sorted(p.name for p in target.glob("part-*")) == [shard_name(k) for k in range(3)]
    assert not (target / f".{shard_name(3)}.sha256").exists()
    assert verify_dataset(target)["total_rows"] == 6

    other_path, _ = _spec(tmp_path, seed=1)
    (target / "stray.txt").write_text("x")
    assert prepare_variant.fn(other_path, "dag", str(target)) == [0, 1, 2]
    assert sorted(p.name for p in target.iterdir()) == [SPEC_NAME]


def test_resume_plan_from_the_library(tmp_path: Path) -> None:
    _, spec = _spec(tmp_path)
    record = spec.variant_spec("dag")
    target = tmp_path / "dag"
    plan = prepare_variant_dir(target, record, 3)
    assert plan == ResumePlan(todo=[0, 1, 2], done=set(), cleared=False)
    write_shard(target, 0, _samples(0))
    write_shard(target, 5, _samples(10))  # beyond the spec: not counted as done
    assert prepare_variant_dir(target, record, 3) == ResumePlan([1, 2], {0}, False)
    other = SynthesisSpec(num_samples=6, shard_size=2, seed=9, variants={"dag": {}})
    assert prepare_variant_dir(target, other.variant_spec("dag"), 3).cleared
    assert not list(target.glob("part-*"))
    with pytest.raises(DagError, match=r"shard\(s\) \[0, 1, 2\]"):
        finish_variant_dir(target, 3)


def test_a_dataset_from_before_the_uncertainty_column_is_rendered_again(tmp_path: Path) -> None:
    """Shards of schema version 1 (no ``uncertainty``) are never kept by a resume, even under
    the same spec: the rerun renders every shard in the current schema (version 3)."""
    spec_path, spec = _spec(tmp_path)
    target = tmp_path / "dag"
    shutil.copytree(Path(__file__).parent / "data" / "shards-v1", target)  # 2 version-1 shards
    (target / SPEC_NAME).write_text(json.dumps(spec.variant_spec("dag"), indent=2, sort_keys=True))
    assert verify_dataset(target)["schema_version"] == 1  # whole, and still readable
    assert prepare_variant.fn(spec_path, "dag", str(target)) == [0, 1, 2]
    assert not (target / MANIFEST_NAME).exists()
    for k in range(3):
        write_shard(target, k, _samples(2 * k), overwrite=True)
    assert finish_variant_dir(target, 3)["schema_version"] == 3
    assert verify_dataset(target)["card"]["file"] == "README.md"  # the card comes with it
