"""The whole pipeline as one Prefect flow, for users without DVC: ``python -m flows.pipeline``.

Runs the same stage flows as ``dvc repro`` (as subflows, in dvc.yaml order) with the same
params.yaml groups, but without DVC's caching: every stage runs every time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from prefect import flow

from dag_core.errors import DagError
from flows._cli import checked_kwargs, load_params, run_cli
from flows.base_model import base_model
from flows.dfid import dfid
from flows.downstream import downstream
from flows.label_subset import label_subset
from flows.probe_heads import probe_heads
from flows.reference import reference
from flows.sweep import sweep
from flows.synthesize import synthesize
from flows.train_heads import train_heads
from flows.train_prior import train_prior

STAGES: dict[str, Callable[..., Any]] = {
    "base_model": base_model,
    "label_subset": label_subset,
    "train_heads": train_heads,
    "probe_heads": probe_heads,
    "train_prior": train_prior,
    "synthesize": synthesize,
    "reference": reference,
    "dfid": dfid,
    "sweep": sweep,
    "downstream": downstream,
}


def check_stages(stages: list[str] | None) -> list[str]:
    """The stages to run (default: all); DagError naming any unknown one."""
    chosen = stages or list(STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        names = ", ".join(STAGES)
        raise DagError(f"unknown stage(s) {', '.join(unknown)}; expected some of {names}")
    return chosen


@flow(name="dag-pipeline", persist_result=False)
def pipeline(params_file: str = "params.yaml", stages: list[str] | None = None) -> list[str]:
    """Run ``stages`` (default: all, in order), each with its params.yaml group."""
    chosen = check_stages(stages)
    outputs = []
    for name in STAGES:
        if name in chosen:
            fn = STAGES[name]
            outputs.append(str(fn(**checked_kwargs(fn, name, load_params(params_file, name)))))
    return outputs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=pipeline.__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("stages", nargs="*", help="stages to run (default: all, in order)")
    args = parser.parse_args(argv)

    def body() -> None:
        # Every chosen stage's group, names, types and output paths are checked before any
        # Prefect run starts (a bad value in the last stage must not cost the first ones); input
        # datasets are checked as each stage starts, since earlier stages (re)write them.
        for name in check_stages(args.stages):
            checked_kwargs(STAGES[name], name, load_params(args.params, name), inputs=False)
        pipeline(params_file=args.params, stages=args.stages or None)

    run_cli(body)


if __name__ == "__main__":
    main()
