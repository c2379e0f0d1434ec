"""Task: write the labelled subset (train + held-out pairs) as Parquet shards."""

from __future__ import annotations

import json
from pathlib import Path

from dag_core.atomic import replace_dir
from dag_core.cards import labelled_card
from dag_core.errors import DagError
from dag_core.shards import DEPTH_DTYPES, write_dataset
from dag_core.sources import open_source, split_indices
from tasks import run_logger, stage_task


@stage_task
def write_label_subset(
    out_dir: str,
    *,
    source: str,
    resolution: int,
    n: int,
    n_heldout: int,
    seed: int,
    path: str | None = None,
    depth_dir: str | None = None,
    split: str = "test",
    depth_dtype: str = "float16",
    shard_size: int = 500,
    license: str = "other",
) -> str:
    """Pick ``n`` + ``n_heldout`` pairs deterministically and write ``out_dir/{train,heldout}``,
    each with its dataset card (``license`` its licence field)."""
    logger = run_logger()
    if depth_dtype not in DEPTH_DTYPES:  # before the output folder is touched
        raise DagError(f"unknown depth_dtype {depth_dtype!r}; expected one of {DEPTH_DTYPES}")
    pairs = open_source(source, resolution, path=path, depth_dir=depth_dir, split=split)
    train, heldout = split_indices(len(pairs), n, n_heldout, seed)
    counts = {}
    with replace_dir(out_dir) as tmp:
        for name, indices in (("train", train), ("heldout", heldout)):
            if not indices:
                continue
            samples = (pairs[i] for i in indices)
            card = labelled_card(
                name, license=license, source=source, path=path, seed=seed, resolution=resolution
            )
            manifest = write_dataset(
                tmp / name, samples, shard_size=shard_size, depth_dtype=depth_dtype, card=card
            )
            counts[name] = manifest["total_rows"]
            logger.info("wrote %d %s pairs from %s", counts[name], name, source)
        summary = {"source": source, "path": path, "resolution": resolution, "seed": seed, **counts}
        (tmp / "subset.json").write_text(json.dumps(summary, indent=2) + "\n")
    return str(Path(out_dir))
