"""Stage ``reference``: what generated data is compared against.

* a held-out procedural world split (``test``): the real image set for FID / dFID on the embedded
  default and the always-available test split of the downstream evaluation;
* ``floor`` (``n_floor`` pairs): more held-out world pairs, the dfid stage's floor — the FID / dFID
  that real images themselves reach at the generated sets' sample count;
* the reference depth estimator for dFID: by default a depth U-Net trained on plenty of
  procedural-world pairs (labels are free there). For real data set ``estimator`` to a depth net
  folder trained on your domain (``dag_core.downstream.save_depth_net`` layout); the stage then
  only writes the world split.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from dag_core.errors import DagError
from flows._cli import check_runtime, run_stage
from tasks.evaluation import fit_depth_net, write_world_reference


@flow(name="reference", persist_result=False)
def reference(
    resolution: int = 32,
    n_train: int = 2000,
    n_test: int = 256,
    n_floor: int = 0,
    data_dir: str = "data/reference",
    out_dir: str = "models/reference_depth",
    norm: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Write ``data_dir/{train,test}`` (and ``floor`` when ``n_floor`` > 0) and train the
    reference estimator into ``out_dir``."""
    runtime = check_runtime(runtime)
    if isinstance(n_floor, bool) or not isinstance(n_floor, int) or n_floor < 0:
        raise DagError(f"reference n_floor must be an int >= 0, got {n_floor!r}")
    write_world_reference(data_dir, resolution, n_train, n_test, n_floor)
    return fit_depth_net(
        [f"{data_dir}/train"], out_dir, dict(config or {}), dict(norm or {}), runtime
    )


if __name__ == "__main__":
    run_stage(reference, "reference")
