"""What the Hugging Face–native shards (schema version 3) cost in bytes and read speed.

The same procedural-world image–depth pairs (float16 depth, the default) are written side by side
as schema version 2 (``rgb`` PNG bytes, ``depth`` raw float16 bytes: the writer of main before
version 3, reproduced here with the same Parquet options) and as version 3 (``rgb`` the
``datasets`` Image struct, ``depth`` an ``Array2D`` of float16), at the embedded default's 32²
and at 256². Recorded per format: the bytes of the shards, and the best of ``--repeats`` wall
times of three reads — :func:`dag_core.shards.read_samples` (the package's readers: verify, PNG
and depth decode), :class:`dag_core.shards.ShardDataset` (what training iterates) and
``pyarrow.parquet.read_table`` of every shard (the raw columns, what pandas and ``datasets``
start from).

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

import pyarrow as pa
import pyarrow.parquet as pq

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


def best(fn, repeats: int) -> float:
    """The best wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 4)


def measure(directory: Path, repeats: int) -> dict[str, float | int]:
    """Bytes and read times of one dataset folder."""
    shards = sorted(directory.glob("part-*.parquet"))
    return {
        "shard_bytes": sum(p.stat().st_size for p in shards),
        "read_samples_s": best(lambda: list(read_samples(directory)), repeats),
        "shard_dataset_s": best(lambda: list(ShardDataset(directory)), repeats),
        "pyarrow_read_table_s": best(lambda: [pq.read_table(p) for p in shards], repeats),
    }


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
            old, new = measure(v2, args.repeats), measure(v3, args.repeats)
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
