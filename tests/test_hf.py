"""Hugging Face ``datasets`` opens a generated shard dataset as it is; depth decodes to metres."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only; never the hub (read at import)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # the dev extra (`make setup` installs it)
import numpy as np
import PIL.Image
import pytest

from dag_core.errors import DagError
from dag_core.hf import decode_batch, decode_example, load_shards, shard_files
from dag_core.shards import Sample, read_samples, write_manifest, write_shard
from dag_core.synthesis import SynthesisSpec, load_models, render_shard
from tests.tiny_models import write_tiny_models


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DAG synthesis output (3 shards, DCG + DPG), written by the real renderer + manifest."""
    root = tmp_path_factory.mktemp("hf")
    paths = write_tiny_models(root / "models")
    models = load_models(paths["base_model"], paths["heads"], paths["prior"])
    spec = SynthesisSpec(
        num_samples=5,
        shard_size=2,
        seed=11,
        steps=3,
        variants={"dag": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100}},
        hashes=models.hashes,
    )
    out = root / "synthetic" / "dag"
    for k in range(spec.num_shards):
        render_shard(models, spec, "dag", k, out, batch_size=2)
    write_manifest(out)
    return out


def test_load_dataset_parquet_opens_generated_dataset_as_is(generated: Path, tmp_path: Path):
    assert (generated / "_manifest.json").is_file()  # the folder is left exactly as written
    files = sorted(str(p) for p in generated.glob("part-*.parquet"))
    raw = datasets.load_dataset(
        "parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache")
    )
    assert raw.num_rows == 5
    assert raw["id"] == [f"dag-{i:08d}" for i in range(5)]
    assert raw.features["rgb"] == datasets.Image()  # schema version 3: the features decode
    assert raw.features["depth"] == datasets.Array2D(shape=(32, 32), dtype="float16")
    assert isinstance(raw[0]["rgb"], PIL.Image.Image) and len(raw[0]["depth"]) == 32

    reference = list(read_samples(generated))
    decoded = raw.with_transform(decode_batch)
    for i, want in enumerate(reference):
        row = decoded[i]
        assert row["id"] == want.id and row["seed"] == want.seed
        assert row["uncertainty"] == want.uncertainty and want.uncertainty > 0  # the label's score
        assert row["image"].dtype == np.uint8 and row["image"].shape == (32, 32, 3)
        np.testing.assert_array_equal(row["image"], want.rgb)
        assert row["depth"].dtype == np.float32 and row["depth"].shape == (32, 32)
        np.testing.assert_array_equal(row["depth"], want.depth)
        assert np.isfinite(row["depth"]).all() and (row["depth"] > 0).all()  # metres, not bytes
        assert row["meta"]["guidance"]["w_dc"] == 40.0 and row["meta"]["index"] == i
        assert "rgb" not in row  # the raw columns replaced by decoded arrays
    batch = decoded[1:4]  # batched access decodes too
    assert [d.shape for d in batch["depth"]] == [(32, 32)] * 3

    # The helper does the same in one call (shards in order, manifest and spec files skipped).
    assert shard_files(generated) == files
    same = load_shards(generated, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(same[4]["depth"], reference[4].depth)
    assert same[4]["uncertainty"] == reference[4].uncertainty
    assert load_shards(generated, cache_dir=tmp_path / "cache", decode=False).features[
        "uncertainty"
    ] == datasets.Value("float32")


def test_decode_uint16mm_and_float32_and_bad_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 9.0, (6, 8)).astype(np.float32)
    depth[0, 0] = np.nan  # invalid pixel: stored as 0 mm
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    for dtype in ("uint16mm", "float32"):
        out = tmp_path / dtype
        write_shard(out, 0, [Sample(id="a", rgb=rgb, depth=depth, seed=None)], depth_dtype=dtype)
        write_manifest(out)
        raw = datasets.load_dataset(
            "parquet", data_files=shard_files(out), split="train", cache_dir=str(tmp_path / "c")
        )
        row = decode_example(raw[0])
        np.testing.assert_array_equal(row["image"], rgb)
        assert row["seed"] is None and row["meta"] == {} and row["uncertainty"] is None
        if dtype == "uint16mm":
            assert row["depth"][0, 0] == 0.0
            np.testing.assert_allclose(row["depth"][1:], depth[1:], atol=5e-4)
        else:
            np.testing.assert_array_equal(row["depth"][1:], depth[1:])

    bad = dict(raw[0], width=7)
    with pytest.raises(DagError, match="does not fit 6x7"):
        decode_example(bad)
    with pytest.raises(DagError, match="no column 'rgb'"):
        decode_example({k: v for k, v in raw[0].items() if k != "rgb"})
    with pytest.raises(DagError, match="no part-"):
        shard_files(tmp_path / "nothing", verify=False)
    with pytest.raises(DagError, match="nothing does not exist"):
        shard_files(tmp_path / "nothing")


def test_damaged_or_incomplete_dataset_is_never_read_as_whole(
    generated: Path, tmp_path: Path
) -> None:
    """A zeroed kilobyte in one shard, or a shard deleted: the verified file list (and
    load_shards) name it instead of reading the rest as the whole dataset; verify=False is the
    explicit opt-out."""
    zeroed = tmp_path / "zeroed"
    shutil.copytree(generated, zeroed)
    shard = zeroed / "part-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[1024:2048] = bytes(1024)
    shard.write_bytes(bytes(data))
    deleted = tmp_path / "deleted"
    shutil.copytree(generated, deleted)
    (deleted / "part-00002.parquet").unlink()
    cache = tmp_path / "cache"
    for folder, problem in ((zeroed, "checksum mismatch"), (deleted, "is missing")):
        name = "part-00001" if folder is zeroed else "part-00002"
        with pytest.raises(DagError, match=f"{problem}.*{name}|{name}.*{problem}"):
            shard_files(folder)
        with pytest.raises(DagError, match=name):
            load_shards(folder, cache_dir=cache)
    assert len(shard_files(deleted, verify=False)) == 2  # the opt-out: what is on disk
    assert load_shards(deleted, cache_dir=cache, verify=False).num_rows == 4


def test_schema_version_1_shards_decode_with_no_uncertainty(tmp_path: Path) -> None:
    """Datasets written before the ``uncertainty`` column open and decode as they are."""
    v1 = Path(__file__).parent / "data" / "shards-v1"
    ds = load_shards(v1, cache_dir=tmp_path / "cache")
    assert ds.num_rows == 5 and "uncertainty" not in ds.column_names
    rows = ds[:]
    assert rows["id"] == [f"v1-{i}" for i in range(5)] and rows["uncertainty"] == [None] * 5
    want = list(read_samples(v1))
    np.testing.assert_array_equal(rows["depth"][3], want[3].depth)
