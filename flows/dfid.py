"""Stage ``dfid``: dFID, FID and image–label consistency of every synthetic variant, with CIs.

Paper §5: dFID is the FID between depth maps estimated (by one reference estimator) from
generated images and from real images; lower means more realistic scene geometry. torch-fidelity
computes the distances on Inception-v3 (2015-12-05) features, offline. Every number comes with a
bootstrap 95 % CI over the generated samples, and every variant is compared with
``reference_variant`` (default ``unguided``; same seeds) by a paired difference with its CI — a
difference whose CI contains 0 is reported as "no difference" (:mod:`dag_core.metrics.effect`).
With ``floor`` (held-out real pairs) the same scores of real images at the same count are the
floor, and each variant's gap above it (``headroom``) bounds what any guidance can gain.
Every parameter defaults to params.yaml's ``dfid`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.dfid import DfidParams

    main(DfidParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.checks import synthetic_variants
from flows.schema.dfid import DfidParams
from tasks.evaluation import compute_dfid

D = stage_defaults("dfid")


@flow(name="dfid", persist_result=False)
def dfid(
    synthetic: str = D["synthetic"],
    variants: list[str] | None = D["variants"],
    real: str = D["real"],
    estimator: str = D["estimator"],
    extractor: str = D["extractor"],
    batch_size: int = D["batch_size"],
    max_samples: int | None = D["max_samples"],
    n_boot: int = D["n_boot"],
    reference_variant: str | None = D["reference_variant"],
    metrics_file: str = D["metrics_file"],
    runtime: dict[str, Any] = D["runtime"],
    floor: str | None = D["floor"],
) -> str:
    """Write ``metrics_file`` with dFID, FID, KID, P/R and consistency per variant (null:
    every variant folder of ``synthetic``) and the paired differences to ``reference_variant``;
    with ``floor`` (held-out real pairs, at least as many as each variant) also the floor and
    each variant's headroom above it."""
    p = validate(DfidParams, locals())
    runtime = check_runtime(p["runtime"])
    variants = p["variants"] if p["variants"] is not None else synthetic_variants(p["synthetic"])
    compute_dfid(
        p["synthetic"],
        variants,
        p["real"],
        p["estimator"],
        p["extractor"],
        p["batch_size"],
        p["max_samples"],
        p["n_boot"],
        p["reference_variant"],
        p["metrics_file"],
        runtime,
        p["floor"],
    )
    return p["metrics_file"]
