"""Label subset: deterministic choice of N pairs from world / NYU / folder sources, as shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dag_core.errors import DagError
from dag_core.shards import read_samples, verify_dataset
from dag_core.sources import open_source, resize_pair, split_indices
from tasks.label_subset import write_label_subset


def _subset(out: Path, **kw: object) -> dict[str, list]:
    args = {"source": "world", "resolution": 32, "n": 6, "n_heldout": 3, "seed": 1, **kw}
    write_label_subset.fn(str(out), **args)
    return {
        split: [(s.id, s.rgb, s.depth) for s in read_samples(out / split)]
        for split in ("train", "heldout")
        if (out / split).exists()
    }


def test_split_is_deterministic_disjoint_and_nested() -> None:
    train, held = split_indices(1000, 10, 5, seed=3)
    assert (train, held) == split_indices(1000, 10, 5, seed=3)
    assert not set(train) & set(held) and len(set(train)) == 10
    big_train, big_held = split_indices(1000, 100, 5, seed=3)
    assert big_held == held and big_train[:10] == train  # a 10-subset is inside the 100-subset
    assert split_indices(1000, 10, 5, seed=4) != (train, held)


def test_world_subset_is_reproducible_and_seed_dependent(tmp_path: Path) -> None:
    a = _subset(tmp_path / "a")
    b = _subset(tmp_path / "b")
    c = _subset(tmp_path / "c", seed=2)
    assert [r[0] for r in a["train"]] == [r[0] for r in b["train"]]
    for (_, rgb_a, d_a), (_, rgb_b, d_b) in zip(a["train"], b["train"], strict=True):
        assert np.array_equal(rgb_a, rgb_b) and np.array_equal(d_a, d_b)
    assert [r[0] for r in a["train"]] != [r[0] for r in c["train"]]
    assert len(a["train"]) == 6 and len(a["heldout"]) == 3
    assert a["train"][0][1].shape == (32, 32, 3) and a["train"][0][2].dtype == np.float32
    summary = json.loads((tmp_path / "a" / "subset.json").read_text())
    assert summary["train"] == 6 and summary["resolution"] == 32


def test_each_split_has_its_dataset_card(tmp_path: Path) -> None:
    """train and heldout each carry a README.md card: the licence given, what the split is for,
    how it was picked, checksummed in the manifest (verify fails without it)."""
    write_label_subset.fn(
        str(tmp_path / "l"),
        source="world",
        resolution=16,
        n=3,
        n_heldout=2,
        seed=4,
        license="cc-by-4.0",
    )
    for split, role in (("train", "train the depth heads"), ("heldout", "probe the heads")):
        text = (tmp_path / "l" / split / "README.md").read_text()
        front = yaml.safe_load(text.split("---\n")[1])
        assert front["license"] == "cc-by-4.0" and front["task_categories"] == ["depth-estimation"]
        assert front["pretty_name"] == f"Labelled image–depth pairs: {split} (world)"
        assert role in text and "| split seed | 4 |" in text and "| resolution | 16 |" in text
        assert verify_dataset(tmp_path / "l" / split)["card"]["info"]["license"] == "cc-by-4.0"
    (tmp_path / "l" / "heldout" / "README.md").unlink()
    with pytest.raises(DagError, match=r"README\.md listed in"):
        verify_dataset(tmp_path / "l" / "heldout")


def test_nyu_subset_from_real_pairs(tmp_path: Path, nyu_test50_dir: Path) -> None:
    out = _subset(tmp_path / "nyu", source="nyu", path=str(nyu_test50_dir), n=4, n_heldout=2)
    ids = [r[0] for r in out["train"]]
    assert all(i.startswith("nyu-") for i in ids) and len(set(ids)) == 4
    depth = out["train"][0][2]
    assert depth.shape == (32, 32) and 0.3 < float(np.median(depth[depth > 0])) < 10


def test_resize_pair_keeps_measured_depth_values() -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    depth = np.random.default_rng(0).choice([0.0, 1.5, 3.25], size=(480, 640)).astype(np.float32)
    _, small = resize_pair(rgb, depth, 64)
    assert small.shape == (64, 64) and set(np.unique(small)) <= {0.0, 1.5, 3.25}


def test_folder_source_and_bad_inputs(tmp_path: Path) -> None:
    images, depths = tmp_path / "img", tmp_path / "depth"
    images.mkdir()
    depths.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 48, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
        Image.fromarray(np.full((40, 48), 1000 * (i + 1), np.uint16)).save(depths / f"{i}.png")
    src = open_source("folder", 32, path=str(images), depth_dir=str(depths))
    assert len(src) == 3 and src[2].depth.max() == pytest.approx(3.0)
    with pytest.raises(DagError, match="n=3 \\+ n_heldout=1 pairs but the source has only 3"):
        _subset(
            tmp_path / "x",
            source="folder",
            path=str(images),
            depth_dir=str(depths),
            n=3,
            n_heldout=1,
        )
    assert not (tmp_path / "x").exists()  # nothing written on bad input
    Image.fromarray(np.full((40, 48), 7, np.uint8)).save(depths / "1.png")
    with pytest.raises(DagError, match="not 16-bit"):
        open_source("folder", 32, path=str(images), depth_dir=str(depths))[1]
    with pytest.raises(DagError, match="unknown source kind 'lsun'"):
        open_source("lsun", 32)
    with pytest.raises(DagError, match="folder not found"):
        open_source("folder", 32, path=str(tmp_path / "nope"), depth_dir=str(depths))


def test_failed_rerun_keeps_previous_subset(tmp_path: Path) -> None:
    out = tmp_path / "labelled"
    first = _subset(out)
    with pytest.raises(DagError):
        _subset(out, source="nyu", path=str(tmp_path / "missing.mat"))
    again = {s: [(r.id) for r in read_samples(out / s)] for s in ("train", "heldout")}
    assert again["train"] == [r[0] for r in first["train"]]
