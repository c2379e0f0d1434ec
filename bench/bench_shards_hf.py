"""What the Hugging Face–native shards (schema version 3) cost in bytes and read speed.

The same procedural-world image–depth pairs (float16 depth, the default) are written side by side
as schema version 2 (``rgb`` PNG bytes, ``depth`` raw float16 bytes: the writer of main before
version 3, reproduced here with the same Parquet options) and as version 3 (``rgb`` the
``datasets`` Image struct, ``depth`` an ``Array2D`` of float16), at the embedded default's 32²
and at 256². Recorded per format: the bytes of the shards, and the best of ``--repeats`` wall
times of four reads — :func:`dag_core.shards.read_samples` (the package's readers: verify, PNG
and depth decode), :class:`dag_core.shards.ShardDataset` (what training iterates),
``pyarrow.parquet.read_table`` of every shard (the raw columns, what pandas and ``datasets``
start from) and every row through ``datasets`` as uint8 image and metric depth arrays (version 2:
:func:`dag_core.hf.load_shards`' transform; version 3: ``load_dataset(DIR)`` alone in numpy
format; both from their Arrow cache, built once before timing).

Usage: ``python bench/bench_shards_hf.py [--repeats 3]``; writes
``bench/results/shards_hf.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import load_dataset

from dag_core.hf import load_shards
from dag_core.shards import SCHEMA_V2, ShardDataset, read_samples, write_dataset
from dag_core.shards.codec import Sample, encode_depth, sample_row
from dag_core.shards.integrity import sha256_file, sidecar
from dag_core.world import iter_scenes

RESULTS = Path(__file__).resolve().parent / "results" / "shards_hf.json"
#: (resolution, samples, shard size)
CASES = [(32, 512, 64), (256, 64, 16)]


def samples(resolution: int, count: int) -> list[Sample]:
    """World pairs, as the reference stage writes them."""
    return [
        Sample(id=f"world-{s:09d}", rgb=rgb, depth=d, seed=s, source="world", uncertainty=0.5)
        for s, rgb, d in iter_scenes(0, count, resolution)
    ]


def write_v2(directory: Path, rows: list[Sample], shard_size: int) -> None:
    """Schema version 2 shards, written as main's writer did before version 3."""
    directory.mkdir(parents=True)
    for index, start in enumerate(range(0, len(rows), shard_size)):
        records = []
        for s in rows[start : start + shard_size]:
            row = sample_row(s, "float16")
            row["depth"] = encode_depth(s.depth, "float16")
            records.append(row)
        path = directory / f"part-{index:05d}.parquet"
        pq.write_table(
            pa.Table.from_pylist(records, schema=SCHEMA_V2),
            path,
            row_group_size=100,
            compression="zstd",
            use_dictionary=["depth_dtype", "source"],
            write_statistics=["id", "height", "width", "seed", "depth_dtype", "source"],
        )
        sidecar(path).write_text(f"{sha256_file(path)}  {path.name}\n")
    shards = [
        {"file": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "sha256": sha256_file(p)}
        for p in sorted(directory.glob("part-*.parquet"))
    ]
    manifest = {"schema_version": 2, "depth_dtype": "float16", "total_rows": len(rows)}
    (directory / "_manifest.json").write_text(json.dumps({**manifest, "shards": shards}))


def best_pair(fns: tuple[Any, Any], repeats: int) -> tuple[float, float]:
    """The best wall time of ``repeats`` calls of each of two functions, in seconds, called in
    turn (v2, v3, v2, v3...) so load from other processes falls on both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return round(min(times[0]), 4), round(min(times[1]), 4)


def hf_rows(directory: Path, cache: Path, version: int) -> Any:
    """A function that reads every row of ``directory`` through ``datasets`` as arrays."""
    if version == 2:
        ds = load_shards(directory, cache_dir=cache)  # the decode_batch transform

        def read() -> None:
            for row in ds:
                np.asarray(row["image"]), np.asarray(row["depth"], np.float32)

    else:
        ds = load_dataset(str(directory), split="train", cache_dir=str(cache))
        ds = ds.with_format("numpy")  # Image and Array2D decoded by datasets itself

        def read() -> None:
            for row in ds:
                np.asarray(row["rgb"]), np.asarray(row["depth"], np.float32)

    return read


def measure(v2: Path, v3: Path, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bytes and read times of the version 2 and version 3 folders, side by side."""
    old, new = {}, {}
    shards = {d: sorted(d.glob("part-*.parquet")) for d in (v2, v3)}
    for d, out in ((v2, old), (v3, new)):
        out["shard_bytes"] = sum(p.stat().st_size for p in shards[d])
    reads = {
        "read_samples_s": lambda d: lambda: list(read_samples(d)),
        "shard_dataset_s": lambda d: lambda: list(ShardDataset(d)),
        "pyarrow_read_table_s": lambda d: lambda: [pq.read_table(p) for p in shards[d]],
    }
    for name, make in reads.items():
        old[name], new[name] = best_pair((make(v2), make(v3)), repeats)
    hf = (hf_rows(v2, v2.parent / "cache-v2", 2), hf_rows(v3, v3.parent / "cache-v3", 3))
    old["datasets_rows_s"], new["datasets_rows_s"] = best_pair(hf, repeats)
    return old, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for resolution, count, shard_size in CASES:
            rows = samples(resolution, count)
            v2, v3 = Path(tmp) / f"v2-{resolution}", Path(tmp) / f"v3-{resolution}"
            write_v2(v2, rows, shard_size)
            write_dataset(v3, rows, shard_size=shard_size)
            old, new = measure(v2, v3, args.repeats)
            ratio = {k: round(new[k] / old[k], 3) for k in old}
            cases.append(
                {"resolution": resolution, "samples": count, "v2": old, "v3": new, "v3/v2": ratio}
            )
            print(json.dumps(cases[-1]))
    result = {
        "benchmark": "shard schema v3 (datasets Image + Array2D float16) vs v2 (PNG + raw bytes)",
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "cases": cases,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
