"""Stage ``probe_heads``: which decoder layers carry depth (paper Fig. 4a/4b) — for ANY U-Net.

Trains one small head per decoder layer and per labelled-set size N, and measures the trained
MLP-S / MLP-W vs t, so a user with a new diffusers model can choose S and W from evidence.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows._cli import check_runtime, run_stage
from tasks.heads import run_probes


@flow(name="probe-heads", persist_result=False)
def probe_heads(
    base_model: str = "models/base",
    labelled: str = "data/labelled",
    heads: str = "models/heads",
    t: int = 50,
    layers: list[int] | None = None,
    ns: list[int] | None = None,
    norm: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    eval_t: list[int] | None = None,
    out_dir: str = "plots/probe",
    runtime: dict[str, Any] | None = None,
) -> str:
    """Write ``layers.csv``, ``num_images.csv``, ``vs_t.csv`` and ``probes.png`` to ``out_dir``."""
    runtime = check_runtime(runtime)
    return run_probes(
        base_model,
        labelled,
        t,
        layers,
        ns or [10, 50, 100],
        dict(config or {}),
        dict(norm or {}),
        heads,
        eval_t or [0, 100, 250, 500],
        out_dir,
        runtime,
    )


if __name__ == "__main__":
    run_stage(probe_heads, "probe_heads")
