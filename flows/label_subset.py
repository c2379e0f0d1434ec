"""Stage ``label_subset``: choose N labelled image–depth pairs (paper: ~100) and write shards.

``python -m flows.label_subset`` reads the ``label_subset`` group of params.yaml.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from dag_core.backbone import model_resolution
from flows._cli import check_runtime, run_stage
from tasks.label_subset import write_label_subset


@flow(name="label-subset", persist_result=False)
def label_subset(
    source: str = "world",
    n: int = 100,
    n_heldout: int = 50,
    seed: int = 0,
    path: str | None = None,
    depth_dir: str | None = None,
    split: str = "test",
    base_model: str = "models/base",
    resolution: int | None = None,
    depth_dtype: str = "float16",
    out_dir: str = "data/labelled",
    runtime: dict[str, Any] | None = None,
) -> str:
    """Write ``out_dir/train`` (n pairs) and ``out_dir/heldout`` (n_heldout pairs) as shards.

    ``resolution`` defaults to the base model's sample size, so pairs match the U-Net input.
    ``runtime`` is validated like every stage's; the world renderer is vectorised NumPy on the
    CPU (hundreds of scenes/s), so this stage does not use the GPU.
    """
    check_runtime(runtime)
    res = resolution or model_resolution(base_model)
    return write_label_subset(
        out_dir,
        source=source,
        resolution=res,
        n=n,
        n_heldout=n_heldout,
        seed=seed,
        path=path,
        depth_dir=depth_dir,
        split=split,
        depth_dtype=depth_dtype,
    )


if __name__ == "__main__":
    run_stage(label_subset, "label_subset")
