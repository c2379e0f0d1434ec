"""Tasks for stage ``synthesize``: one Prefect task per shard (paths in, paths out)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dag_core.interrupt import work_thread
from dag_core.resume import finish_variant_dir, prepare_variant_dir
from dag_core.runtime import RuntimeConfig
from dag_core.shards import CardInfo
from dag_core.synthesis import (
    SynthesisModels,
    SynthesisSpec,
    guidance_config,
    load_models,
    render_shard,
    spec_digest,
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
    (other params or models) are cleared, since they can never be part of this dataset
    (:func:`dag_core.resume.prepare_variant_dir`).
    """
    logger = run_logger()
    spec = read_spec(spec_path)
    record = spec.variant_spec(variant)
    plan = prepare_variant_dir(out_dir, record, spec.num_shards)
    if plan.cleared:
        logger.info("%s held another spec; started %s afresh", out_dir, variant)
    logger.info(
        "variant %s (spec %s): %d/%d shards done, %d to render",
        variant,
        spec_digest(record),
        len(plan.done),
        spec.num_shards,
        len(plan.todo),
    )
    return plan.todo


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
    """Render and atomically write one shard on the runtime device; returns its path.

    Interruptible (:func:`dag_core.interrupt.work_thread`): Ctrl-C / SIGTERM stop it within one
    sampler step even on a thread-pool runner's thread; the shard is then not written."""
    spec = read_spec(spec_path)
    rt = RuntimeConfig.from_params(runtime)
    used_prior = prior if variant_uses_prior(spec, variant) else None
    models = cached_models(base_model, heads, used_prior, rt)
    n = len(spec.shard_indices(shard))
    with (
        work_thread(),
        tqdm(total=n, desc=f"{variant} shard {shard:05d}", leave=False) as bar,
    ):
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
def finish_variant(out_dir: str, num_shards: int, card: dict[str, Any] | None = None) -> str:
    """Drop shards beyond the spec (none in a clean run) and write the dataset card (``card``:
    :class:`~dag_core.shards.CardInfo` fields) and the manifest.

    The manifest is written only when every shard ``0 … num_shards-1`` verifies
    (:func:`dag_core.resume.finish_variant_dir`).
    """
    manifest = finish_variant_dir(out_dir, num_shards, None if card is None else CardInfo(**card))
    run_logger().info("%s complete: %d rows", out_dir, manifest["total_rows"])
    return out_dir
