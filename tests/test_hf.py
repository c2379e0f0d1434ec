"""Hugging Face ``datasets`` opens a generated shard dataset as it is; depth decodes to metres."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only; never the hub (read at import)
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # the dev extra (`make setup` installs it)
import huggingface_hub
import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
import yaml

from dag_core.errors import DagError
from dag_core.hf import decode_batch, decode_example, load_shards, shard_files
from dag_core.shards import (
    Sample,
    hf_features,
    read_samples,
    verify_dataset,
    write_dataset,
    write_manifest,
    write_shard,
)
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


# --- schema version 3: datasets alone reads the shards; the dataset card ------------------------

#: run in a fresh interpreter outside the repo: datasets, pandas and pyarrow only
ALONE = r"""
import json, sys
import numpy as np, pandas as pd, pyarrow.parquet as pq
from datasets import load_dataset

out = {}
for folder in sys.argv[2:]:
    ds = load_dataset(folder, split="train", cache_dir=sys.argv[1])  # the folder, via its card
    field = pq.read_schema(sorted(__import__("glob").glob(folder + "/part-*.parquet"))[0]).field(
        "depth"
    )
    scale = float(field.metadata[b"scale"])
    assert field.metadata[b"unit"] == b"m"
    rows = [ds[i] for i in range(ds.num_rows)]
    frame = pd.read_parquet(folder, ignore_prefixes=[".", "_", "README"])
    out[folder] = {
        "ids": [r["id"] for r in rows],
        "image_types": sorted({type(r["rgb"]).__module__ for r in rows}),
        "images": [np.asarray(r["rgb"]).tolist() for r in rows],
        "depth": [
            (np.asarray(r["depth"], np.float64) * scale).astype(np.float32).tolist() for r in rows
        ],
        "uncertainty": [r["uncertainty"] for r in rows],
        "seed": [r["seed"] for r in rows],
        "meta": [json.loads(r["meta"]) for r in rows],
        "pandas_ids": sorted(frame["id"]),
        "features": {k: repr(v) for k, v in ds.features.items()},
    }
ours = sorted(m for m in sys.modules if m.split(".")[0] in ("dag_core", "tasks", "flows", "tests"))
print(json.dumps({"ours": ours, "out": out}))
"""


def test_load_dataset_alone_gives_pil_images_and_metric_depth(
    generated: Path, tmp_path: Path
) -> None:
    """``datasets.load_dataset(DIR)`` in a process that never imports this package: PIL images
    and (stored value × the field's scale) metric depth equal to the package's own readers, for
    float16 metres and uint16 millimetres; pandas reads the same rows."""
    rng = np.random.default_rng(1)
    mm = tmp_path / "mm"
    samples = [
        Sample(
            id=f"m{i}",
            rgb=rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
            depth=rng.uniform(0.3, 9.0, (6, 8)).astype(np.float32),
            seed=i,
        )
        for i in range(3)
    ]
    samples[0].depth[0, 0] = np.nan  # no depth: stored as 0 mm, read as 0.0 m
    write_dataset(mm, samples, shard_size=2, depth_dtype="uint16mm")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-c", ALONE, str(tmp_path / "cache"), str(generated), str(mm)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ours"] == []  # nothing of this package was imported
    for folder in (generated, mm):
        got, want = result["out"][str(folder)], list(read_samples(folder))
        assert got["ids"] == got["pandas_ids"] == [s.id for s in want]
        assert got["image_types"] == ["PIL.PngImagePlugin"]
        assert "Array2D" in got["features"]["depth"] and "Image" in got["features"]["rgb"]
        for i, s in enumerate(want):
            np.testing.assert_array_equal(np.array(got["images"][i], np.uint8), s.rgb)
            np.testing.assert_array_equal(np.array(got["depth"][i], np.float32), s.depth)
            assert got["uncertainty"][i] == s.uncertainty and got["seed"][i] == s.seed
            assert got["meta"][i] == s.meta
    assert result["out"][str(mm)]["depth"][0][0][0] == 0.0


def test_features_metadata_is_what_datasets_writes(tmp_path: Path) -> None:
    """The ``huggingface`` schema metadata and the depth field's extension are byte for byte
    what ``datasets`` itself writes for the same features, for each depth dtype and for a shard
    of mixed sizes (depth a List of Lists)."""
    rng = np.random.default_rng(2)

    def sample(i: int, h: int, w: int) -> Sample:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        return Sample(id=f"s{i}", rgb=rgb, depth=rng.uniform(1, 5, (h, w)), uncertainty=0.5)

    for dtype, sizes in [("float16", [(4, 5)] * 2), ("float32", [(4, 5)]), ("uint16mm", [(3, 2)])]:
        for mixed in (False, True):
            shapes = [*sizes, (2, 7)] if mixed else sizes
            out = tmp_path / f"{dtype}-{mixed}"
            path = write_shard(
                out, 0, [sample(i, *hw) for i, hw in enumerate(shapes)], depth_dtype=dtype
            )
            ours = pq.read_schema(path)
            features = datasets.Features.from_dict(hf_features(dtype, None if mixed else shapes[0]))
            theirs_path = tmp_path / f"theirs-{dtype}-{mixed}.parquet"
            rows = pq.read_table(path).to_pylist()
            datasets.Dataset.from_list(rows, features=features).to_parquet(str(theirs_path))
            theirs = pq.read_schema(theirs_path)
            assert ours.metadata[b"huggingface"] == theirs.metadata[b"huggingface"]
            assert datasets.Features.from_arrow_schema(ours) == features
            ext = {k: v for k, v in ours.field("depth").metadata.items() if b"ARROW" in k}
            assert ext == (theirs.field("depth").metadata or {})
            meta = ours.field("depth").metadata
            scale = b"0.001" if dtype == "uint16mm" else b"1.0"
            assert meta[b"unit"] == b"m" and meta[b"scale"] == scale


def test_dataset_card_is_what_the_hub_reads_and_is_checked(generated: Path, tmp_path: Path):
    """README.md: front matter with configs (the manifest's shards), the features as
    ``datasets`` writes them in YAML, task and size categories and licence; a body from the
    rows' records (model hashes, guidance, seeds, the uncertainty CI); the same bytes when
    rebuilt; ``verify`` fails when it is missing or changed."""
    text = (generated / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    card = yaml.safe_load(front)
    manifest = verify_dataset(generated)
    files = [s["file"] for s in manifest["shards"]]
    assert card["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": files}]}
    ]
    features = datasets.Features.from_arrow_schema(pq.read_schema(generated / files[0]))
    assert card["dataset_info"]["features"] == features._to_yaml_list()
    assert card["dataset_info"]["splits"][0]["num_examples"] == 5
    assert card["task_categories"] == ["depth-estimation"] and card["size_categories"] == ["n<1K"]
    assert card["license"] == "other" and "synthetic" in card["tags"]
    info = huggingface_hub.DatasetCard(text).data.to_dict()  # how the Hub parses it
    assert info["task_categories"] == ["depth-estimation"]
    meta = next(read_samples(generated, columns=["meta"])).meta
    for key, value in meta["hashes"].items():
        assert f"| hashes.{key} | {value} |" in body
    assert "| guidance.w_dc | 40.0 |" in body and "| sampler | ddim |" in body
    assert "label uncertainty (mean of the rows' scores):" in body and "95 % CI, n=5" in body

    copy = tmp_path / "copy" / generated.name  # the card names its folder
    shutil.copytree(generated, copy)
    assert write_manifest(copy) == manifest  # rebuilt from the same records: the same card
    assert (copy / "README.md").read_bytes() == text.encode()
    (copy / "README.md").write_text(text + "edited\n")
    with pytest.raises(DagError, match="checksum mismatch for dataset card"):
        verify_dataset(copy)
    (copy / "README.md").unlink()
    with pytest.raises(DagError, match=r"README\.md listed in .* is missing"):
        verify_dataset(copy)
    with pytest.raises(DagError, match=r"README\.md"):
        shard_files(copy)


def test_reference_splits_have_cards_that_load_dataset_reads(tmp_path: Path) -> None:
    """The reference stage's splits (train, test, floor) each carry their card with the licence
    given; ``load_dataset`` on a split folder reads exactly its rows."""
    from tasks.evaluation import write_world_reference

    out = tmp_path / "reference"
    write_world_reference.fn(str(out), 16, 3, 2, 1, license="cc0-1.0")
    for split, rows in (("train", 3), ("test", 2), ("floor", 1)):
        manifest = verify_dataset(out / split)
        assert manifest["card"]["info"]["license"] == "cc0-1.0"
        assert manifest["card"]["info"]["title"] == f"Procedural world reference pairs: {split}"
        ds = datasets.load_dataset(str(out / split), split="train", cache_dir=str(tmp_path / "c"))
        assert ds.num_rows == rows and ds.features["rgb"] == datasets.Image()
        assert ds["id"] == [s.id for s in read_samples(out / split, columns=[])]
    assert "FID / dFID" in (out / "test" / "README.md").read_text()
