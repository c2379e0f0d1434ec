"""Stage ``probe_heads``: which decoder layers carry depth (paper Fig. 4a/4b) — for ANY U-Net.

Trains one small head per decoder layer and per labelled-set size N, and measures the trained
MLP-S / MLP-W vs t, so a user with a new diffusers model can choose S and W from evidence.
Every parameter defaults to params.yaml's ``probe_heads`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.probe_heads import ProbeHeadsParams

    main(ProbeHeadsParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.probe_heads import ProbeHeadsParams
from tasks.heads import run_probes

D = stage_defaults("probe_heads")


@flow(name="probe-heads", persist_result=False)
def probe_heads(
    base_model: str = D["base_model"],
    labelled: str = D["labelled"],
    heads: str = D["heads"],
    t: int = D["t"],
    layers: list[int] | None = D["layers"],
    ns: list[int] = D["ns"],
    norm: dict[str, Any] = D["norm"],
    config: dict[str, Any] = D["config"],
    eval_t: list[int] = D["eval_t"],
    out_dir: str = D["out_dir"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Write ``layers.csv``, ``num_images.csv``, ``vs_t.csv`` and ``probes.png`` to ``out_dir``
    (``layers``: null = every decoder layer)."""
    p = validate(ProbeHeadsParams, locals())
    runtime = check_runtime(p["runtime"])
    return run_probes(
        p["base_model"],
        p["labelled"],
        p["t"],
        p["layers"],
        p["ns"],
        p["config"],
        p["norm"],
        p["heads"],
        p["eval_t"],
        p["out_dir"],
        runtime,
    )
