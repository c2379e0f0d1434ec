"""Stage ``base_model``: the frozen pixel-space diffusion model every later stage uses (paper §3).

With ``pretrained`` set (a local diffusers folder or a hub id such as ``google/ddpm-bedroom-256``)
the stage checks that it loads and pins it in ``out_dir``; otherwise it trains the embedded tiny
DDPM on the procedural world so the pipeline runs offline on a CPU.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from dag_core.errors import DagError
from flows._cli import check_runtime, run_stage
from tasks.base_model import pin_pretrained_base_model, train_embedded_base_model


@flow(name="base-model", persist_result=False)
def base_model(
    pretrained: str | None = None,
    out_dir: str = "models/base",
    train: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    render_workers: int = 0,
) -> str:
    """Pin ``pretrained`` or train the embedded model with the ``train`` settings (on the
    ``runtime`` device; ``render_workers`` processes render world scenes ahead of the GPU)."""
    runtime = check_runtime(runtime)
    if pretrained:
        return pin_pretrained_base_model(out_dir, pretrained)
    if (
        isinstance(render_workers, bool)
        or not isinstance(render_workers, int)
        or render_workers < 0
    ):
        raise DagError(f"render_workers must be an int >= 0, got {render_workers!r}")
    return train_embedded_base_model(out_dir, dict(train or {}), runtime, render_workers)


if __name__ == "__main__":
    run_stage(base_model, "base_model")
