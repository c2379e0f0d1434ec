"""The whole pipeline as one Prefect flow, for users without DVC: ``python -m flows.pipeline``.

Runs the same stage flows as ``dvc repro`` (as subflows, in dvc.yaml order) with the same
params.yaml groups, but without DVC's caching: every stage runs every time. The command line
checks every chosen stage's params (values and output paths) before Prefect or torch is
imported; each stage checks its inputs as it starts, since earlier stages write them.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # check the params before Prefect and torch load
    from flows.cli.run import run_cli
    from flows.schema.stages import check_pipeline

    run_cli(lambda: check_pipeline(sys.argv[1:]), prefect=False)

from collections.abc import Callable
from typing import Any, NoReturn

from prefect import flow

from flows._params import load_group
from flows.base_model import base_model
from flows.cli.run import mark_command, run_cli, run_flow
from flows.dfid import dfid
from flows.downstream import downstream
from flows.label_subset import label_subset
from flows.labellers import labellers
from flows.probe_heads import probe_heads
from flows.reference import reference
from flows.report import report
from flows.schema.stages import check_pipeline, check_stages
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
    "labellers": labellers,
    "dfid": dfid,
    "sweep": sweep,
    "downstream": downstream,
    "report": report,
}


@flow(name="dag-pipeline", persist_result=False)
def pipeline(params_file: str = "params.yaml", stages: list[str] | None = None) -> list[str]:
    """Run ``stages`` (default: all, in order), each with its params.yaml group."""
    chosen = check_stages(stages)
    return [
        str(fn(**load_group(params_file, name))) for name, fn in STAGES.items() if name in chosen
    ]


def main(argv: list[str] | None = None) -> NoReturn:
    """``python -m flows.pipeline [--params F] [stages...]``: check every chosen stage's params,
    then run them in order."""
    mark_command()
    args = run_cli(lambda: check_pipeline(sys.argv[1:] if argv is None else argv), prefect=False)
    run_flow(lambda: pipeline, lambda fn: fn(params_file=args.params, stages=args.stages or None))
    raise SystemExit(0)


if __name__ == "__main__":
    main()
