"""Stage ``dfid``: dFID and FID of every synthetic variant against the real image set.

Paper §5: dFID is the FID between depth maps estimated (by one reference estimator) from
generated images and from real images; lower means more realistic scene geometry. torch-fidelity
computes both distances on Inception-v3 (2015-12-05) features, offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from dag_core.errors import DagError
from flows._cli import check_runtime, run_stage
from tasks.evaluation import compute_dfid, dfid_sweep, sweep_from_variants


@flow(name="dfid", persist_result=False)
def dfid(
    synthetic: str = "data/synthetic",
    variants: list[str] | None = None,
    real: str = "data/reference/test",
    estimator: str = "models/reference_depth",
    extractor: str = "auto",
    batch_size: int = 50,
    max_samples: int | None = None,
    metrics_file: str = "metrics/dfid.json",
    sweep: dict[str, Any] | None = None,
    sweep_file: str = "plots/dfid_sweep.csv",
    runtime: dict[str, Any] | None = None,
) -> str:
    """Write ``metrics_file`` with dFID and FID per variant (default: every synthetic variant).

    With ``sweep`` ({scales, num_samples, base_model, heads, prior, sampler, steps, seed, ...})
    also sample one set per guidance scale and write dFID vs w to ``sweep_file`` (paper Fig. 8);
    without it ``sweep_file`` holds the variants whose two scales are equal (w = 0, w = 40).
    """
    runtime = check_runtime(runtime)
    if variants is None:
        root = Path(synthetic)
        if not root.is_dir():
            raise DagError(f"synthetic dataset folder not found: {root}")
        variants = sorted(p.name for p in root.iterdir() if p.is_dir())
    compute_dfid(
        synthetic,
        variants,
        real,
        estimator,
        extractor,
        batch_size,
        max_samples,
        metrics_file,
        runtime,
    )
    if sweep:
        dfid_sweep(dict(sweep), real, estimator, extractor, batch_size, sweep_file, runtime)
    else:
        sweep_from_variants(synthetic, metrics_file, sweep_file)
    return metrics_file


if __name__ == "__main__":
    run_stage(dfid, "dfid")
