"""Tests for dag_core.shards: Parquet image–depth shards, atomic writes, manifest, readers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from dag_core import shards
from dag_core.errors import DagError
from dag_core.shards import (
    MANIFEST_NAME,
    Sample,
    ShardDataset,
    completed_shards,
    decode_depth,
    encode_depth,
    read_samples,
    read_table,
    shard_name,
    update_card,
    verify_dataset,
    write_dataset,
    write_manifest,
    write_shard,
)
from dag_core.shards.card import CARD_NAME, CardInfo
from dag_core.shards.codec import SHARD_RE

#: what pandas / pyarrow must skip to read a dataset folder: dot-files, ``_manifest.json`` and
#: the dataset card ``README.md`` (as the card itself says)
SKIP = [".", "_", "README"]

REPO = Path(__file__).resolve().parents[1]


def make_samples(n: int, h: int = 6, w: int = 5, start: int = 0, seed: int = 0) -> list[Sample]:
    """``n`` random samples with depth in 0.1..20 m and some metadata."""
    rng = np.random.default_rng(seed)
    return [
        Sample(
            id=f"s{start + i:04d}",
            rgb=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            depth=rng.uniform(0.1, 20.0, (h, w)).astype(np.float32),
            seed=None if i % 3 == 0 else int(rng.integers(0, 2**40)),
            source="synthetic" if i % 2 else "nyu",
            meta={"guidance": {"depth_scale": 0.5 * i, "sampler": "ddim"}, "hash": f"{i:x}"},
        )
        for i in range(n)
    ]


def expected_depth(depth: np.ndarray, dtype: str) -> np.ndarray:
    """The quantisation each dtype applies, computed independently of the module."""
    if dtype == "float16":
        return depth.astype(np.float16).astype(np.float32)
    if dtype == "uint16mm":
        mm = np.clip(np.rint(depth.astype(np.float64) * 1000), 0, 65535).astype(np.uint16)
        return mm.astype(np.float32) / np.float32(1000)
    return depth.astype(np.float32)


@pytest.mark.parametrize("dtype", ["float16", "float32", "uint16mm"])
def test_round_trip_bit_exact(tmp_path: Path, dtype: str) -> None:
    samples = make_samples(7)
    write_dataset(tmp_path / "ds", samples, shard_size=3, depth_dtype=dtype)
    back = list(read_samples(tmp_path / "ds"))
    assert [s.id for s in back] == [s.id for s in samples]
    for src, got in zip(samples, back, strict=True):
        assert got.rgb.dtype == np.uint8 and np.array_equal(got.rgb, src.rgb)
        assert got.depth.dtype == np.float32
        want = expected_depth(src.depth, dtype)
        assert got.depth.tobytes() == want.tobytes()
        assert (got.seed, got.source, got.meta) == (src.seed, src.source, src.meta)
    if dtype != "float32":
        assert not np.array_equal(back[0].depth, samples[0].depth)  # quantisation did happen


def test_encode_depth_uint16mm_clips_and_marks_invalid() -> None:
    depth = np.array([[0.0012, -1.0, np.nan], [70.0, np.inf, 1.2344]], dtype=np.float32)
    raw = np.frombuffer(encode_depth(depth, "uint16mm"), dtype="<u2").reshape(2, 3)
    assert raw.tolist() == [[1, 0, 0], [65535, 0, 1234]]
    back = decode_depth(encode_depth(depth, "uint16mm"), "uint16mm", 2, 3)
    assert back.dtype == np.float32 and back[0, 1] == 0.0 and back[1, 0] == np.float32(65.535)


def test_encode_depth_is_little_endian_and_sized() -> None:
    depth = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert encode_depth(depth, "float32") == depth.astype("<f4").tobytes()
    assert len(encode_depth(depth, "float16")) == 12
    with pytest.raises(DagError, match="does not fit 3x3"):
        decode_depth(encode_depth(depth, "float16"), "float16", 3, 3)


def test_unknown_dtype_and_bad_samples_rejected(tmp_path: Path) -> None:
    good = make_samples(1)[0]
    with pytest.raises(DagError, match="'bfloat16'"):
        encode_depth(good.depth, "bfloat16")
    with pytest.raises(DagError, match="'uint8'"):
        write_shard(tmp_path, 0, [good], depth_dtype="uint8")
    bad_rgb = Sample("a", good.rgb.astype(np.float32), good.depth)
    with pytest.raises(DagError, match="rgb must be uint8"):
        write_shard(tmp_path, 0, [bad_rgb])
    bad_shape = Sample("b", good.rgb, good.depth[:-1])
    with pytest.raises(DagError, match="depth shape"):
        write_shard(tmp_path, 0, [bad_shape])
    int_depth = Sample("c", good.rgb, (good.depth * 1000).astype(np.uint16))
    with pytest.raises(DagError, match="float array in metres"):
        write_shard(tmp_path, 0, [int_depth])
    bad_meta = Sample("d", good.rgb, good.depth, meta={"x": object()})
    with pytest.raises(DagError, match="JSON"):
        write_shard(tmp_path, 0, [bad_meta])
    dup = make_samples(2)
    dup[1].id = dup[0].id
    with pytest.raises(DagError, match="duplicate"):
        write_dataset(tmp_path / "dup", dup)
    assert not list(tmp_path.glob("part-*"))


def test_shard_names_and_row_groups(tmp_path: Path) -> None:
    assert shard_name(0) == "part-00000.parquet"
    assert shard_name(12) == "part-00012.parquet"
    with pytest.raises(DagError):
        shard_name(-1)
    manifest = write_dataset(tmp_path, make_samples(250, 2, 2), shard_size=200, row_group_size=60)
    assert sorted(p.name for p in tmp_path.glob("part-*.parquet")) == [shard_name(0), shard_name(1)]
    groups = [
        [pq.ParquetFile(tmp_path / s["file"]).metadata.row_group(i).num_rows for i in range(n)]
        for s in manifest["shards"]
        for n in [pq.ParquetFile(tmp_path / s["file"]).metadata.num_row_groups]
    ]
    assert groups == [[60, 60, 60, 20], [50]]


def test_manifest_counts_and_checksums(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path, make_samples(11), shard_size=4, depth_dtype="uint16mm")
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk == manifest
    assert manifest["schema_version"] == shards.SCHEMA_VERSION
    assert manifest["depth_dtype"] == "uint16mm"
    assert manifest["total_rows"] == 11
    assert [(s["file"], s["rows"]) for s in manifest["shards"]] == [
        (shard_name(0), 4),
        (shard_name(1), 4),
        (shard_name(2), 3),
    ]
    for s in manifest["shards"]:
        assert s["sha256"] == hashlib.sha256((tmp_path / s["file"]).read_bytes()).hexdigest()
    assert verify_dataset(tmp_path) == manifest


def page_byte(path: Path) -> int:
    """The offset of the last byte of the shard's first ``rgb`` column chunk (page data, not a
    header or the footer: the file still opens with it changed)."""
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert chunk.path_in_schema == "rgb.bytes"
    return chunk.data_page_offset + chunk.total_compressed_size - 1


def test_verify_detects_tampering(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(6), shard_size=3)
    victim = tmp_path / shard_name(1)
    data = bytearray(victim.read_bytes())
    data[page_byte(victim)] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DagError, match=f"checksum mismatch for .*{shard_name(1)}"):
        verify_dataset(tmp_path)
    # a rebuilt manifest never blesses damaged bytes: the shard is left out of it ...
    assert completed_shards(tmp_path) == {0}
    assert [s["file"] for s in write_manifest(tmp_path)["shards"]] == [shard_name(0)]
    with pytest.raises(DagError, match=f"{shard_name(1)} is not listed"):
        verify_dataset(tmp_path)
    # ... until it is written again
    write_shard(tmp_path, 1, make_samples(3, start=3), overwrite=True)
    write_manifest(tmp_path)
    verify_dataset(tmp_path)
    write_shard(tmp_path, 2, make_samples(1, start=50))
    with pytest.raises(DagError, match=f"{shard_name(2)} is not listed"):
        verify_dataset(tmp_path)
    (tmp_path / shard_name(2)).unlink()
    (tmp_path / shard_name(0)).unlink()
    with pytest.raises(DagError, match=f"{shard_name(0)} listed .* is missing"):
        verify_dataset(tmp_path)


def test_refuses_overwrite_and_keeps_data(tmp_path: Path) -> None:
    first = make_samples(3)
    write_shard(tmp_path, 0, first)
    before = (tmp_path / shard_name(0)).read_bytes()
    with pytest.raises(DagError, match=f"{shard_name(0)} already exists"):
        write_shard(tmp_path, 0, make_samples(2, start=10))
    with pytest.raises(DagError, match="already exists"):
        write_dataset(tmp_path, make_samples(2, start=10))
    assert (tmp_path / shard_name(0)).read_bytes() == before
    write_shard(tmp_path, 0, make_samples(2, start=10), overwrite=True)
    assert [s.id for s in read_samples(tmp_path, verify=False)] == ["s0010", "s0011"]


def test_failed_write_leaves_no_shard_and_keeps_old(tmp_path: Path, monkeypatch) -> None:
    write_shard(tmp_path, 0, make_samples(3))
    old = (tmp_path / shard_name(0)).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        write_shard(tmp_path, 1, make_samples(3, start=3))
    with pytest.raises(OSError, match="disk on fire"):
        write_shard(tmp_path, 0, make_samples(3, start=3), overwrite=True)
    monkeypatch.undo()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".{shard_name(0)}.sha256", shard_name(0)]  # temp files removed
    assert (tmp_path / shard_name(0)).read_bytes() == old
    assert completed_shards(tmp_path) == {0}


CRASH_SCRIPT = """
import sys, time
import pyarrow.parquet as pq
from dag_core import shards
from tests.test_shards import make_samples

out = sys.argv[1]
shards.write_shard(out, 0, make_samples(4))
real = pq.write_table

def slow(table, where, **kw):
    real(table.slice(0, 2), where, **kw)   # a valid-looking prefix sits in the temp file
    where.flush()
    print("WRITING", flush=True)
    time.sleep(60)

pq.write_table = slow
shards.write_shard(out, 1, make_samples(4, start=4))
"""


def test_sigkill_mid_write_leaves_only_complete_shards(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "WRITING"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and names[0] == f".{shard_name(0)}.sha256" and names[2] == shard_name(0)
    assert names[1].startswith(f".{shard_name(1)}.tmp-")
    assert pq.ParquetFile(tmp_path / names[1]).metadata.num_rows == 2  # readable, yet ignored
    assert completed_shards(tmp_path) == {0}
    with pytest.raises(DagError, match="incomplete: missing manifest"):
        list(read_samples(tmp_path))  # no manifest: never read as a whole dataset
    assert [s.id for s in read_samples(tmp_path, verify=False)] == [f"s{i:04d}" for i in range(4)]
    assert len(pd.read_parquet(tmp_path, ignore_prefixes=SKIP)) == 4
    manifest = write_manifest(tmp_path)
    assert [s["file"] for s in manifest["shards"]] == [shard_name(0)]
    # resume: write the missing shard, then everything is there exactly once
    write_shard(tmp_path, 1, make_samples(4, start=4))
    assert completed_shards(tmp_path) == {0, 1}
    assert write_manifest(tmp_path)["total_rows"] == 8
    assert [s.id for s in read_samples(tmp_path)] == [f"s{i:04d}" for i in range(8)]


def test_corrupt_shard_named_in_error(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(6), shard_size=2)
    truncated = tmp_path / shard_name(1)
    truncated.write_bytes(truncated.read_bytes()[:-50])
    (tmp_path / shard_name(3)).write_bytes(b"not a parquet file at all")
    assert completed_shards(tmp_path) == {0, 2}
    with pytest.raises(DagError, match=f"corrupt shard .*{shard_name(1)}"):
        list(read_samples(tmp_path))
    with pytest.raises(DagError, match=f"corrupt shard .*{shard_name(1)}"):
        read_table(tmp_path)
    with pytest.raises(DagError, match=f"corrupt shard .*{shard_name(1)}"):
        ShardDataset(tmp_path)
    assert [s["file"] for s in write_manifest(tmp_path)["shards"]] == [shard_name(0), shard_name(2)]


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DagError, match="does not exist"):
        list(read_samples(tmp_path / "nope"))
    with pytest.raises(DagError, match="holds no part"):
        read_table(tmp_path)
    with pytest.raises(DagError, match="no complete shards"):
        write_manifest(tmp_path)
    with pytest.raises(DagError, match="missing manifest"):
        verify_dataset(tmp_path)
    assert completed_shards(tmp_path / "nope") == set()


def test_mixed_depth_dtypes_refused_in_manifest(tmp_path: Path) -> None:
    write_shard(tmp_path, 0, make_samples(2), depth_dtype="float16")
    write_shard(tmp_path, 1, make_samples(2, start=2), depth_dtype="uint16mm")
    with pytest.raises(DagError, match="mix depth dtypes"):
        write_manifest(tmp_path)
    # reading still decodes each row by its own dtype
    back = list(read_samples(tmp_path, verify=False))
    src = make_samples(2) + make_samples(2, start=2)
    for got, want, dtype in zip(back, src, ["float16"] * 2 + ["uint16mm"] * 2, strict=True):
        assert np.array_equal(got.depth, expected_depth(want.depth, dtype))


def test_pandas_and_read_table_open_directory(tmp_path: Path) -> None:
    samples = make_samples(9)
    write_dataset(tmp_path, samples, shard_size=4)
    (tmp_path / f".{shard_name(3)}.tmp-123").write_bytes(b"partial junk")
    assert (tmp_path / MANIFEST_NAME).is_file()
    frame = pd.read_parquet(tmp_path, ignore_prefixes=SKIP)
    assert sorted(frame["id"]) == [s.id for s in samples]
    assert list(frame.columns) == shards.SCHEMA.names
    table = read_table(tmp_path)
    assert table.schema.equals(shards.SCHEMA)
    assert table.column("id").to_pylist() == [s.id for s in samples]
    row = table.slice(5, 1).to_pylist()[0]
    depth = np.array(row["depth"], dtype=np.float16)  # an Array2D: H lists of W metres
    assert np.array_equal(depth, expected_depth(samples[5].depth, "float16"))
    png = pd.read_parquet(tmp_path / shard_name(1))["rgb"][1]["bytes"]  # the Image struct
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), samples[5].rgb)
    assert json.loads(row["meta"]) == samples[5].meta


def test_read_samples_column_subset(tmp_path: Path) -> None:
    samples = make_samples(4)
    write_dataset(tmp_path, samples, depth_dtype="float32")
    back = list(read_samples(tmp_path, columns=["depth", "meta"]))
    assert all(s.rgb is None and s.seed is None and s.source == "" for s in back)
    assert [s.meta for s in back] == [s.meta for s in samples]
    assert all(np.array_equal(a.depth, b.depth) for a, b in zip(back, samples, strict=True))
    with pytest.raises(DagError, match="unknown sample columns"):
        list(read_samples(tmp_path, columns=["nope"]))


def test_shard_dataset_dataloader_two_workers(tmp_path: Path) -> None:
    samples = make_samples(13, h=4, w=3)
    write_dataset(tmp_path, samples, shard_size=3, depth_dtype="uint16mm")  # 5 shards
    dataset = ShardDataset(tmp_path)
    assert len(dataset) == 13
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    items = list(loader)
    ids = [item["id"] for item in items]
    assert sorted(ids) == [s.id for s in samples] and len(set(ids)) == len(ids)
    by_id = {s.id: s for s in samples}
    for item in items:
        src = by_id[item["id"]]
        assert item["image"].shape == (3, 4, 3) and item["image"].dtype == torch.float32
        assert item["image"].min() >= -1 and item["image"].max() <= 1
        rgb = ((item["image"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(rgb, src.rgb)
        assert item["depth"].shape == (1, 4, 3) and item["depth"].dtype == torch.float32
        assert np.array_equal(item["depth"][0].numpy(), expected_depth(src.depth, "uint16mm"))
        assert item["seed"] == (-1 if src.seed is None else src.seed)


def test_shard_dataset_transform_and_batching(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(5, h=4, w=4), shard_size=2)

    def flip(item: dict) -> dict:
        return {**item, "depth": item["depth"].flip(-1)}

    plain = list(ShardDataset(tmp_path))
    flipped = list(ShardDataset(tmp_path, transform=flip))
    assert [p["id"] for p in plain] == [f"s{i:04d}" for i in range(5)]
    for p, f in zip(plain, flipped, strict=True):
        assert torch.equal(p["depth"].flip(-1), f["depth"])
    batch = next(iter(torch.utils.data.DataLoader(ShardDataset(tmp_path), batch_size=5)))
    assert batch["image"].shape == (5, 3, 4, 4) and batch["seed"].shape == (5,)


def test_temp_files_use_non_shard_names(tmp_path: Path, monkeypatch) -> None:
    """The checksum is recorded before the shard gets its final name: a shard file that can be
    seen at all is complete (a reader, a resume or a test watching the folder can rely on it)."""
    seen: list[str] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        assert not SHARD_RE.match(Path(src).name)
        assert completed_shards(tmp_path) == set()  # not yet visible, though fsynced
        if Path(dst).name == shard_name(0):  # the shard's own rename: its checksum is there
            recorded = (tmp_path / f".{shard_name(0)}.sha256").read_text().split()[0]
            assert recorded == hashlib.sha256(Path(src).read_bytes()).hexdigest()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_shard(tmp_path, 0, make_samples(2))
    pid = os.getpid()
    assert seen == [f"..{shard_name(0)}.sha256.tmp-{pid}", f".{shard_name(0)}.tmp-{pid}"]
    assert completed_shards(tmp_path) == {0}


def _flip_middle_byte(path: Path) -> None:
    """Damage a shard mid-file, keeping its footer readable."""
    data = bytearray(path.read_bytes())
    data[page_byte(path)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_no_reader_takes_an_incomplete_or_damaged_dataset_as_whole(tmp_path: Path) -> None:
    write_dataset(tmp_path, make_samples(6), shard_size=2)
    (tmp_path / shard_name(1)).unlink()
    (tmp_path / f".{shard_name(1)}.sha256").unlink()
    readers = {
        "read_samples": lambda: list(read_samples(tmp_path)),
        "read_table": lambda: read_table(tmp_path),
        "read_pandas": lambda: shards.read_pandas(tmp_path),
        "ShardDataset": lambda: ShardDataset(tmp_path),
        "load_tensors": lambda: shards.load_tensors(tmp_path),
    }
    for read in readers.values():
        with pytest.raises(DagError, match=f"{shard_name(1)} listed .* is missing"):
            read()
    write_dataset(tmp_path / "b", make_samples(6), shard_size=2)
    _flip_middle_byte(tmp_path / "b" / shard_name(2))
    pq.ParquetFile(tmp_path / "b" / shard_name(2))  # the footer still opens
    for fn in (read_samples, read_table, shards.read_pandas, ShardDataset, shards.load_tensors):
        with pytest.raises(DagError, match=f"checksum mismatch for .*{shard_name(2)}"):
            fn(tmp_path / "b")


def test_damaged_shard_is_not_complete_and_never_blessed(tmp_path: Path) -> None:
    write_shard(tmp_path, 0, make_samples(2))
    write_shard(tmp_path, 1, make_samples(2, start=2))
    _flip_middle_byte(tmp_path / shard_name(1))
    assert completed_shards(tmp_path) == {0}  # resume renders shard 1 again
    assert [s["file"] for s in write_manifest(tmp_path)["shards"]] == [shard_name(0)]
    # a shard without any recorded checksum (e.g. copied in by hand) is not trusted either
    write_shard(tmp_path, 2, make_samples(2, start=4))
    (tmp_path / f".{shard_name(2)}.sha256").unlink()
    assert completed_shards(tmp_path) == {0}


def test_verify_command_reports_state(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    write_dataset(root / "dag", make_samples(4), shard_size=2)
    write_dataset(root / "unguided", make_samples(4), shard_size=2)

    def verify(*dirs: Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "dag_core.shards", "verify", *map(str, dirs)]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)

    ok = verify(root)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ok   ") == 2 and "4 rows" in ok.stdout
    _flip_middle_byte(root / "dag" / shard_name(0))
    (root / "unguided" / MANIFEST_NAME).unlink()
    bad = verify(root)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ")
    assert f"checksum mismatch for {root / 'dag' / shard_name(0)}" in bad.stdout
    assert "unguided is incomplete: missing manifest" in bad.stdout
    assert verify(tmp_path / "nope").returncode == 2


# --- label uncertainty: the column, schema version 1, filtering at read time ---------------------

#: a dataset written by main's code before the ``uncertainty`` column (36d2a6a, schema version 1):
#: 5 rows v1-0 … v1-4 in 2 shards (3 + 2), 4×3 images, float16 depth, seed None for v1-0
V1_DATASET = REPO / "tests" / "data" / "shards-v1"


def scored_samples(scores: list[float | None], h: int = 3, w: int = 2) -> list[Sample]:
    """:func:`make_samples` with the given uncertainty scores (None: no score)."""
    samples = make_samples(len(scores), h, w)
    for sample, score in zip(samples, scores, strict=True):
        sample.uncertainty = score
    return samples


def test_uncertainty_column_round_trips_through_every_reader(tmp_path: Path) -> None:
    scores = [0.25, None, 1.5, 0.0, float("inf"), 3e-5, None]
    samples = scored_samples(scores)
    write_dataset(tmp_path, samples, shard_size=3)
    want = [None if s is None else float(np.float32(s)) for s in scores]  # stored as float32
    assert str(shards.SCHEMA.field("uncertainty").type) == "float" and shards.SCHEMA_VERSION == 3
    assert [s.uncertainty for s in read_samples(tmp_path)] == want
    assert [s.uncertainty for s in read_samples(tmp_path, columns=["uncertainty"])] == want
    assert all(s.uncertainty is None for s in read_samples(tmp_path, columns=["seed"]))
    assert read_table(tmp_path).column("uncertainty").to_pylist() == want
    frame = shards.read_pandas(tmp_path)
    assert frame["uncertainty"].dtype == np.float32 and list(frame.columns) == shards.SCHEMA.names
    nan = [np.nan if u is None else u for u in want]
    np.testing.assert_array_equal(frame["uncertainty"].to_numpy(), np.array(nan, np.float32))
    plain = pd.read_parquet(tmp_path, ignore_prefixes=SKIP)
    np.testing.assert_array_equal(plain["uncertainty"], frame["uncertainty"])
    items = list(ShardDataset(tmp_path))
    got = torch.stack([item["uncertainty"] for item in items])
    assert got.dtype == torch.float32 and torch.equal(got.isnan(), torch.tensor(nan).isnan())
    assert torch.equal(got.nan_to_num(-1.0), torch.tensor(nan, dtype=torch.float32).nan_to_num(-1))


def test_bad_uncertainty_is_refused(tmp_path: Path) -> None:
    good = make_samples(1)[0]
    for bad, match in ((float("nan"), "NaN"), ("0.5", "a number or None"), (True, "a number")):
        good.uncertainty = bad
        with pytest.raises(DagError, match=match):
            write_shard(tmp_path, 0, [good])
    good.uncertainty = np.float32(0.5)  # numpy scalars are numbers
    write_shard(tmp_path, 0, [good])
    assert next(read_samples(tmp_path, verify=False)).uncertainty == 0.5


def test_schema_version_1_datasets_still_read(tmp_path: Path) -> None:
    """Datasets written before the column read as they are, with a null uncertainty."""
    manifest = verify_dataset(V1_DATASET)
    assert manifest["schema_version"] == 1 and manifest["total_rows"] == 5
    ids = [f"v1-{i}" for i in range(5)]
    back = list(read_samples(V1_DATASET))
    assert [s.id for s in back] == ids and all(s.uncertainty is None for s in back)
    assert [s.seed for s in back] == [None, 1, 2, 3, 4] and back[2].meta == {"i": 2}
    assert back[0].rgb.shape == (4, 3, 3) and back[0].depth.shape == (4, 3)
    table = read_table(V1_DATASET)
    assert table.schema.equals(shards.SCHEMA_V2) and table.column("uncertainty").null_count == 5
    assert shards.read_pandas(V1_DATASET)["uncertainty"].isna().all()
    items = list(ShardDataset(V1_DATASET))
    assert [i["id"] for i in items] == ids and all(i["uncertainty"].isnan() for i in items)
    images, depth = shards.load_tensors(V1_DATASET, drop_uncertain=0.5)  # nothing scored: all kept
    assert images.shape == (5, 3, 4, 3) and depth.shape == (5, 1, 4, 3)
    assert [s.id for s in read_samples(V1_DATASET, drop_uncertain=0.5)] == ids

    # a DataLoader batches measured (v1, null) and scored (v2) rows together
    write_dataset(tmp_path / "v2", scored_samples([0.5, 2.0], 4, 3))
    mixed = torch.utils.data.ChainDataset([ShardDataset(V1_DATASET), ShardDataset(tmp_path / "v2")])
    batch = next(iter(torch.utils.data.DataLoader(mixed, batch_size=7)))
    assert batch["uncertainty"].shape == (7,) and batch["uncertainty"][:5].isnan().all()
    assert batch["uncertainty"][5:].tolist() == [0.5, 2.0]

    # writers only count shards of the current schema as done: a resume re-renders v1 shards
    copy = tmp_path / "copy"
    shutil.copytree(V1_DATASET, copy)
    assert completed_shards(copy) == set()
    with pytest.raises(DagError, match="no complete shards"):
        write_manifest(copy)
    # a manifest must not mix versions: a v1 shard listed under a version 2 manifest is a problem
    write_shard(copy, 2, scored_samples([1.0], 4, 3))
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["schema_version"] = 2
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    problems = shards.dataset_problems(copy)
    assert any("schema version 1, but" in p and shard_name(0) in p for p in problems)
    manifest["schema_version"] = 4
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DagError, match="unsupported schema_version 4"):
        verify_dataset(copy)


#: a dataset written by main's code before the ``datasets`` features (5f35fe0, schema version 2):
#: shards-v1's rows renamed v2-0 … v2-4, uncertainty 0.5, None, 2.0, 0.25, 1.0
V2_DATASET = REPO / "tests" / "data" / "shards-v2"


def test_schema_version_2_datasets_read_as_version_3_does(tmp_path: Path) -> None:
    """Version 2 (PNG / depth bytes) reads to the same samples, arrays and tensors as the same
    rows written today (version 3, ``datasets`` features), and a resume redoes its shards."""
    assert verify_dataset(V2_DATASET)["schema_version"] == 2
    old = list(read_samples(V2_DATASET))
    write_dataset(tmp_path / "v3", old, shard_size=3)
    assert verify_dataset(tmp_path / "v3")["schema_version"] == 3
    new = list(read_samples(tmp_path / "v3"))
    assert [s.uncertainty for s in old] == [0.5, None, 2.0, 0.25, 1.0]
    for a, b in zip(old, new, strict=True):
        assert (a.id, a.seed, a.source, a.meta, a.uncertainty) == (
            b.id,
            b.seed,
            b.source,
            b.meta,
            b.uncertainty,
        )
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
    for a, b in zip(ShardDataset(V2_DATASET), ShardDataset(tmp_path / "v3"), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    kept = [s.id for s in read_samples(V2_DATASET, drop_uncertain=0.5)]
    assert kept == [s.id for s in read_samples(tmp_path / "v3", drop_uncertain=0.5)]
    assert read_table(V2_DATASET).schema.equals(shards.SCHEMA_V2)
    assert read_table(tmp_path / "v3").schema.equals(shards.SCHEMA)
    copy = tmp_path / "copy"
    shutil.copytree(V2_DATASET, copy)
    assert completed_shards(copy) == set()


def expected_kept(scores: list[float | None], fraction: float) -> list[int]:
    """The documented rule, written independently: drop floor(f·n) of the n scored rows, the
    largest scores first and, among equal scores, the later row first."""
    scored = [i for i, s in enumerate(scores) if s is not None]
    drop = int(Fraction(str(fraction)) * len(scored))  # floor of the exact decimal
    worst_first = sorted(scored, key=lambda i: (scores[i], i), reverse=True)
    return sorted(set(range(len(scores))) - set(worst_first[:drop]))


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.99])
def test_drop_uncertain_keeps_exactly_the_documented_rows(tmp_path: Path, fraction: float) -> None:
    # 21 rows in 5 shards: 18 scored (ties 0.5 ×4, 2.0 ×3 at the drop boundaries), 3 unscored
    scores: list[float | None] = [0.5, 2.0, None, 0.1, 0.5, 7.0, 2.0, 0.5, 3.0, None, 0.2]
    scores += [2.0, 0.5, 1.0, 4.0, 0.3, None, 0.7, 0.9, 5.0, 6.0]
    samples = scored_samples(scores)
    write_dataset(tmp_path, samples, shard_size=5)
    want = [samples[i].id for i in expected_kept(scores, fraction)]
    assert len(want) == 21 - int(Fraction(str(fraction)) * 18)  # N − floor(f·n)
    assert [s.id for s in read_samples(tmp_path, drop_uncertain=fraction)] == want
    dataset = ShardDataset(tmp_path, drop_uncertain=fraction)
    assert len(dataset) == len(want) and [i["id"] for i in dataset] == want
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    assert sorted(i["id"] for i in loader) == want  # workers split shards, filter per shard
    assert list(read_table(tmp_path, drop_uncertain=fraction).column("id").to_pylist()) == want
    assert list(shards.read_pandas(tmp_path, drop_uncertain=fraction)["id"]) == want
    images, _ = shards.load_tensors(tmp_path, drop_uncertain=fraction)
    first, _ = shards.load_tensors(tmp_path, limit=3, drop_uncertain=fraction)
    assert images.shape[0] == len(want) and torch.equal(first, images[:3])
    np.testing.assert_array_equal(
        np.flatnonzero(shards.keep_mask(np.array(scores, dtype=float), fraction)),
        expected_kept(scores, fraction),
    )
    if fraction == 0.25:  # floor(0.25 · 18) = 4: 7.0, 6.0, 5.0, 4.0
        assert want == [s.id for s, u in zip(samples, scores, strict=True) if u is None or u < 4]


def test_drop_uncertain_count_ties_and_bad_fractions(tmp_path: Path) -> None:
    keep_mask = shards.keep_mask
    assert keep_mask(np.full(100, 1.0), 0.29).sum() == 71  # exact decimal: drops 29, not 28
    assert keep_mask(np.ones(9), 0.1).sum() == 9  # floor(0.9) = 0: nothing dropped
    assert keep_mask([1.0, 3.0, 3.0, 3.0], 0.5).tolist() == [True, True, False, False]
    assert keep_mask([None, np.nan, 1.0], 0.5).tolist() == [True, True, True]  # n = 1
    assert keep_mask([], 0.5).tolist() == []
    write_dataset(tmp_path, scored_samples([1.0, 2.0]))
    for bad, match in ((1.0, "must be < 1"), (-0.1, "must be >= 0"), (True, "a number")):
        with pytest.raises(DagError, match=rf"drop_uncertain={bad}: .*{match}"):
            ShardDataset(tmp_path, drop_uncertain=bad)
        with pytest.raises(DagError, match="drop_uncertain"):
            list(read_samples(tmp_path, drop_uncertain=bad))
        with pytest.raises(DagError, match="drop_uncertain"):
            shards.load_tensors(tmp_path, drop_uncertain=bad)


def test_card_keeps_quality_measured_on_the_same_shards(tmp_path: Path) -> None:
    """A rerun that renders nothing rewrites neither card nor its quality lines; once a shard
    changes, quality measured on the old bytes is no longer claimed."""
    info = CardInfo(title="t", license="cc-by-4.0", made={"m": 1})
    write_dataset(tmp_path, make_samples(4), shard_size=2, card=info)
    update_card(tmp_path, quality=["L_dc: 0.5 [0.4, 0.6]"])
    card = (tmp_path / CARD_NAME).read_bytes()
    stamp = (tmp_path / CARD_NAME).stat().st_mtime_ns
    assert b"- L_dc: 0.5 [0.4, 0.6]" in card
    assert write_manifest(tmp_path, info)["card"]["info"]["quality"] == ["L_dc: 0.5 [0.4, 0.6]"]
    assert (tmp_path / CARD_NAME).read_bytes() == card
    assert (tmp_path / CARD_NAME).stat().st_mtime_ns == stamp  # not even rewritten
    write_manifest(tmp_path, CardInfo(title="other"))  # says something else: quality not kept
    assert b"L_dc" not in (tmp_path / CARD_NAME).read_bytes()
    update_card(tmp_path, title="t", license="cc-by-4.0", made={"m": 1}, quality=["q"])
    write_shard(tmp_path, 1, make_samples(2, start=10), overwrite=True)
    write_manifest(tmp_path, info)  # new bytes: the old quality is dropped
    assert b"- q\n" not in (tmp_path / CARD_NAME).read_bytes()
    assert verify_dataset(tmp_path)["card"]["info"]["quality"] == []
