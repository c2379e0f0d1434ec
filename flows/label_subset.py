"""Stage ``label_subset``: choose N labelled image–depth pairs (paper: ~100) and write shards.

``python -m flows.label_subset`` reads the ``label_subset`` group of params.yaml, which is also
every parameter's default.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.label_subset import LabelSubsetParams

    main(LabelSubsetParams)

from typing import Any

from prefect import flow

from dag_core.backbone import model_resolution
from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.label_subset import LabelSubsetParams
from tasks.artifacts import written
from tasks.label_subset import write_label_subset

D = stage_defaults("label_subset")


@flow(name="label-subset", persist_result=False)
def label_subset(
    source: str = D["source"],
    n: int = D["n"],
    n_heldout: int = D["n_heldout"],
    seed: int = D["seed"],
    path: str | None = D["path"],
    depth_dir: str | None = D["depth_dir"],
    split: str = D["split"],
    base_model: str = D["base_model"],
    resolution: int | None = D["resolution"],
    depth_dtype: str = D["depth_dtype"],
    license: str = D["license"],
    out_dir: str = D["out_dir"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Write ``out_dir/train`` (n pairs) and ``out_dir/heldout`` (n_heldout pairs) as shards.

    ``resolution`` defaults to the base model's sample size, so pairs match the U-Net input.
    ``runtime`` is validated like every stage's; the world renderer is vectorised NumPy on the
    CPU (hundreds of scenes/s), so this stage does not use the GPU.
    """
    p = validate(LabelSubsetParams, locals())
    check_runtime(p["runtime"])
    res = p["resolution"] or model_resolution(p["base_model"])
    out = write_label_subset(
        p["out_dir"],
        source=p["source"],
        resolution=res,
        n=p["n"],
        n_heldout=p["n_heldout"],
        seed=p["seed"],
        path=p["path"],
        depth_dir=p["depth_dir"],
        split=p["split"],
        depth_dtype=p["depth_dtype"],
        license=p["license"],
    )
    written("label_subset", [f"{out}/train", f"{out}/heldout"])
    return out
