"""Stage ``train_prior``: the depth-domain diffusion prior ε_φ used by depth prior guidance.

Paper §4.2: a small diffusion model trained on depth maps (128² was best; the CPU default is
smaller). Its training maps are the labelled subset's depth plus, where the source allows, more
depth maps of the same domain: the procedural world gives unlimited exact depth (``extra_world``);
for real data point ``extra_depth`` at a shard dataset of depth maps from the same domain, or
leave it empty to train on the labelled depth alone. The depth normalisation is the heads' own.
Every parameter defaults to params.yaml's ``train_prior`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.train_prior import TrainPriorParams

    main(TrainPriorParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.train_prior import TrainPriorParams
from tasks.prior import fit_prior

D = stage_defaults("train_prior")


@flow(name="train-prior", persist_result=False)
def train_prior(
    labelled: str = D["labelled"],
    heads: str = D["heads"],
    out_dir: str = D["out_dir"],
    extra_world: int = D["extra_world"],
    extra_depth: str | None = D["extra_depth"],
    config: dict[str, Any] = D["config"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Train ε_φ and write it to ``out_dir`` as a diffusers folder (safetensors)."""
    p = validate(TrainPriorParams, locals())
    runtime = check_runtime(p["runtime"])
    return fit_prior(
        p["labelled"],
        p["heads"],
        p["out_dir"],
        p["config"],
        p["extra_world"],
        p["extra_depth"],
        runtime,
    )
