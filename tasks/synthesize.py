"""Tasks for stage ``synthesize``: one Prefect task per shard (paths in, paths out)."""

from __future__ import annotations

import json
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dag_core.errors import DagError
from dag_core.runtime import RuntimeConfig
from dag_core.shards import MANIFEST_NAME, completed_shards, write_manifest
from dag_core.synthesis import (
    SPEC_NAME,
    SynthesisModels,
    SynthesisSpec,
    guidance_config,
    load_models,
    render_shard,
    spec_digest,
    spec_matches,
)
from tasks import run_logger, stage_task


@lru_cache(maxsize=2)
def cached_models(
    base_model: str, heads: str, prior: str | None, runtime: RuntimeConfig | None = None
) -> SynthesisModels:
    """Models are loaded once per worker process (on the runtime's device: ``auto`` = this
    worker's GPU when it has one) and reused by every shard it renders."""
    rt = runtime or RuntimeConfig()
    device = rt.apply()
    models = load_models(base_model, heads, prior, device=device)
    rt.prepare(models.unet, device)
    return models


def read_spec(spec_path: str) -> SynthesisSpec:
    return SynthesisSpec(**json.loads(Path(spec_path).read_text()))


@stage_task
def prepare_variant(spec_path: str, variant: str, out_dir: str) -> list[int]:
    """Make ``out_dir`` ready for ``variant``; return the shard indices still to render.

    Finished shards of the SAME spec are kept (resume after a crash); shards of a different spec
    (other params or models) are cleared, since they can never be part of this dataset.
    """
    logger = run_logger()
    spec = read_spec(spec_path)
    record = spec.variant_spec(variant)
    target = Path(out_dir)
    if target.exists() and not spec_matches(target, record):
        logger.info("%s holds another spec; starting %s afresh", target, variant)
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    (target / SPEC_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    done = completed_shards(target)  # footer AND sha256 verified: damaged shards are redone
    todo = [k for k in range(spec.num_shards) if k not in done]
    if todo:  # no longer whole: readers must not take it as a finished dataset meanwhile
        (target / MANIFEST_NAME).unlink(missing_ok=True)
    logger.info(
        "variant %s (spec %s): %d/%d shards done, %d to render",
        variant,
        spec_digest(record),
        len(done & set(range(spec.num_shards))),
        spec.num_shards,
        len(todo),
    )
    return todo


@stage_task
def render_shard_task(
    spec_path: str,
    variant: str,
    shard: int,
    out_dir: str,
    base_model: str,
    heads: str,
    prior: str | None,
    batch_size: int,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Render and atomically write one shard on the runtime device; returns its path."""
    spec = read_spec(spec_path)
    rt = RuntimeConfig.from_params(runtime)
    used_prior = prior if variant_uses_prior(spec, variant) else None
    models = cached_models(base_model, heads, used_prior, rt)
    n = len(spec.shard_indices(shard))
    with tqdm(total=n, desc=f"{variant} shard {shard:05d}", leave=False) as bar:
        path = render_shard(
            models,
            spec,
            variant,
            shard,
            out_dir,
            batch_size=batch_size,
            progress=bar.update,
            runtime=rt,
        )
    run_logger().info("wrote %s (%d samples)", path, n)
    return str(path)


def variant_uses_prior(spec: SynthesisSpec, variant: str) -> bool:
    return guidance_config(variant, spec.variants[variant]).w_dp > 0


@stage_task
def finish_variant(out_dir: str, num_shards: int) -> str:
    """Drop shards beyond the spec (none in a clean run) and write the manifest.

    The manifest is written only when every shard ``0 … num_shards-1`` verifies.
    """
    for path in Path(out_dir).glob("part-*.parquet"):
        if int(path.stem.split("-")[1]) >= num_shards:
            path.unlink()
            path.with_name(f".{path.name}.sha256").unlink(missing_ok=True)
    missing = sorted(set(range(num_shards)) - completed_shards(out_dir))
    if missing:
        raise DagError(f"{out_dir}: shard(s) {missing} did not verify after rendering; rerun")
    manifest = write_manifest(out_dir)
    run_logger().info("%s complete: %d rows", out_dir, manifest["total_rows"])
    return out_dir
