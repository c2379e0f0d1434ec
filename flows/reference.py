"""Stage ``reference``: what generated data is compared against.

* a held-out procedural world split (``test``): the real image set for FID / dFID on the embedded
  default and the always-available test split of the downstream evaluation;
* ``floor`` (``n_floor`` pairs): more held-out world pairs, the dfid stage's floor — the FID / dFID
  that real images themselves reach at the generated sets' sample count;
* the real test split's Inception features (images, and the estimator's depth), stored in the
  estimator's folder for the dfid and sweep stages (FID's precomputed reference statistics: the
  same numbers those stages would compute, read when their extractor and batch size match);
* the reference depth estimator for dFID: by default a depth U-Net trained on plenty of
  procedural-world pairs (labels are free there). For real data set ``estimator`` to a depth net
  folder trained on your domain (``dag_core.downstream.save_depth_net`` layout); the stage then
  only writes the world split.

Every parameter defaults to params.yaml's ``reference`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.reference import ReferenceParams

    main(ReferenceParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.reference import ReferenceParams
from tasks.artifacts import written
from tasks.evaluation import fit_depth_net, write_real_features, write_world_reference

D = stage_defaults("reference")


@flow(name="reference", persist_result=False)
def reference(
    resolution: int = D["resolution"],
    n_train: int = D["n_train"],
    n_test: int = D["n_test"],
    n_floor: int = D["n_floor"],
    data_dir: str = D["data_dir"],
    license: str = D["license"],
    out_dir: str = D["out_dir"],
    norm: dict[str, Any] = D["norm"],
    config: dict[str, Any] = D["config"],
    extractor: str = D["extractor"],
    fid_batch_size: int = D["fid_batch_size"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Write ``data_dir/{train,test}`` (and ``floor`` when ``n_floor`` > 0), train the
    reference estimator into ``out_dir`` and store the test split's features there."""
    p = validate(ReferenceParams, locals())
    runtime = check_runtime(p["runtime"])
    data_dir = p["data_dir"]
    write_world_reference(
        data_dir, p["resolution"], p["n_train"], p["n_test"], p["n_floor"], license=p["license"]
    )
    fit_depth_net([f"{data_dir}/train"], p["out_dir"], p["config"], p["norm"], runtime)
    out = write_real_features(
        f"{data_dir}/test", p["out_dir"], p["extractor"], p["fid_batch_size"], runtime
    )
    written("reference", [data_dir, p["out_dir"]])
    return out
