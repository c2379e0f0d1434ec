"""Stage ``base_model``: the frozen pixel-space diffusion model every later stage uses (paper §3).

With ``pretrained`` set (a local diffusers folder or a hub id such as ``google/ddpm-bedroom-256``)
the stage checks that it loads and pins it in ``out_dir``; otherwise it trains the embedded tiny
DDPM on the procedural world so the pipeline runs offline on a CPU. Every parameter defaults to
params.yaml's ``base_model`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.base_model import BaseModelParams

    main(BaseModelParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.base_model import BaseModelParams
from tasks.base_model import pin_pretrained_base_model, train_embedded_base_model

D = stage_defaults("base_model")


@flow(name="base-model", persist_result=False)
def base_model(
    pretrained: str | None = D["pretrained"],
    out_dir: str = D["out_dir"],
    train: dict[str, Any] = D["train"],
    runtime: dict[str, Any] = D["runtime"],
    render_workers: int = D["render_workers"],
) -> str:
    """Pin ``pretrained`` or train the embedded model with the ``train`` settings (on the
    ``runtime`` device; ``render_workers`` processes render world scenes ahead of the GPU)."""
    p = validate(BaseModelParams, locals())
    runtime = check_runtime(p["runtime"])
    if p["pretrained"]:
        return pin_pretrained_base_model(p["out_dir"], p["pretrained"])
    return train_embedded_base_model(p["out_dir"], p["train"], runtime, p["render_workers"])
