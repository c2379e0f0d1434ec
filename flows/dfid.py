"""Stage ``dfid``: dFID, FID and image–label consistency of every synthetic variant, with CIs.

Paper §5: dFID is the FID between depth maps estimated (by one reference estimator) from
generated images and from real images; lower means more realistic scene geometry. torch-fidelity
computes the distances on Inception-v3 (2015-12-05) features, offline. Every number comes with a
bootstrap 95 % CI over the generated samples, and every variant is compared with
``reference_variant`` (default ``unguided``; same seeds) by a paired difference with its CI — a
difference whose CI contains 0 is reported as "no difference" (:mod:`dag_core.metrics.effect`).
With ``floor`` (held-out real pairs) the same scores of real images at the same count are the
floor, and each variant's gap above it (``headroom``) bounds what any guidance can gain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from dag_core.errors import DagError
from flows._cli import check_runtime, run_stage
from tasks.evaluation import compute_dfid


@flow(name="dfid", persist_result=False)
def dfid(
    synthetic: str = "data/synthetic",
    variants: list[str] | None = None,
    real: str = "data/reference/test",
    estimator: str = "models/reference_depth",
    extractor: str = "auto",
    batch_size: int = 50,
    max_samples: int | None = None,
    n_boot: int = 500,
    reference_variant: str | None = "unguided",
    metrics_file: str = "metrics/dfid.json",
    runtime: dict[str, Any] | None = None,
    floor: str | None = None,
) -> str:
    """Write ``metrics_file`` with dFID, FID, KID, P/R and consistency per variant (default:
    every synthetic variant) and the paired differences to ``reference_variant``; with ``floor``
    (held-out real pairs, at least as many as each variant) also the floor and each variant's
    headroom above it."""
    runtime = check_runtime(runtime)
    if variants is None:
        root = Path(synthetic)
        if not root.is_dir():
            raise DagError(f"synthetic dataset folder not found: {root}")
        variants = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not isinstance(n_boot, int) or n_boot < 10:
        raise DagError(f"dfid n_boot must be an int >= 10, got {n_boot!r}")
    if reference_variant is not None and reference_variant not in variants:
        raise DagError(
            f"dfid reference_variant '{reference_variant}' is not among the variants {variants}"
        )
    compute_dfid(
        synthetic,
        variants,
        real,
        estimator,
        extractor,
        batch_size,
        max_samples,
        n_boot,
        reference_variant,
        metrics_file,
        runtime,
        floor,
    )
    return metrics_file


if __name__ == "__main__":
    run_stage(dfid, "dfid")
