"""Stage ``train_prior``: the depth-domain diffusion prior ε_φ used by depth prior guidance.

Paper §4.2: a small diffusion model trained on depth maps (128² was best; the CPU default is
smaller). Its training maps are the labelled subset's depth plus, where the source allows, more
depth maps of the same domain: the procedural world gives unlimited exact depth (``extra_world``);
for real data point ``extra_depth`` at a shard dataset of depth maps from the same domain, or
leave it empty to train on the labelled depth alone. The depth normalisation is the heads' own.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._cli import check_runtime, run_stage
from tasks.prior import fit_prior


@flow(name="train-prior", persist_result=False)
def train_prior(
    labelled: str = "data/labelled",
    heads: str = "models/heads",
    out_dir: str = "models/prior",
    extra_world: int = 2000,
    extra_depth: str | None = None,
    config: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Train ε_φ and write it to ``out_dir`` as a diffusers folder (safetensors)."""
    runtime = check_runtime(runtime)
    return fit_prior(
        labelled, heads, out_dir, dict(config or {}), extra_world, extra_depth, runtime
    )


if __name__ == "__main__":
    run_stage(train_prior, "train_prior")
