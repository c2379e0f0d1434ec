"""Stage ``reference``: what generated data is compared against.

* a held-out procedural world split (``test``): the real image set for FID / dFID on the embedded
  default and the always-available test split of the downstream evaluation;
* the reference depth estimator for dFID: by default a depth U-Net trained on plenty of
  procedural-world pairs (labels are free there). For real data set ``estimator`` to a depth net
  folder trained on your domain (``dag_core.downstream.save_depth_net`` layout); the stage then
  only writes the world split.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._cli import check_runtime, run_stage
from tasks.evaluation import fit_depth_net, write_world_reference


@flow(name="reference", persist_result=False)
def reference(
    resolution: int = 32,
    n_train: int = 2000,
    n_test: int = 256,
    data_dir: str = "data/reference",
    out_dir: str = "models/reference_depth",
    norm: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Write ``data_dir/{train,test}`` and train the reference estimator into ``out_dir``."""
    runtime = check_runtime(runtime)
    write_world_reference(data_dir, resolution, n_train, n_test)
    return fit_depth_net(
        [f"{data_dir}/train"], out_dir, dict(config or {}), dict(norm or {}), runtime
    )


if __name__ == "__main__":
    run_stage(reference, "reference")
