"""Task for stage ``labellers``: the labeller record (every labeller on the world test split)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from dag_core.atomic import write_text_atomic
from dag_core.backbone import load_base_model
from dag_core.configs.downstream import DownstreamConfig
from dag_core.depthnorm import DepthNorm
from dag_core.heads import HeadConfig
from dag_core.labeller import LabellerSpec, labeller_record
from dag_core.results.labellers import labellers_table, times_path
from dag_core.resumable import held_resume_dir
from dag_core.runtime import use_runtime
from tasks import config_from_params, run_logger, stage_task


@stage_task
def record_labellers(
    base_model: str,
    labelled: str,
    heads: str,
    test: str,
    norm: dict[str, Any],
    head_config: dict[str, Any],
    net_config: dict[str, Any],
    labellers: dict[str, dict[str, Any]],
    reference: str,
    runs: int,
    ceiling: dict[str, Any],
    n_boot: int,
    metrics_file: str,
    table_file: str,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Fit and score every labeller (``runs`` times when fitted here), write the record
    (``metrics_file``), the fit times beside it (``<record>.times.json``) and the Markdown table
    (``table_file``). Finished units are kept in
    ``.<metrics file>.resume`` until both are written: a stopped run resumes."""
    logger = run_logger()
    specs = {name: LabellerSpec.parse(name, value, heads) for name, value in labellers.items()}
    rt, device = use_runtime(runtime)
    base = load_base_model(base_model, device=device)
    with held_resume_dir(metrics_file) as work, rt.autocast(device):
        record, times = labeller_record(
            specs,
            base=base,
            base_model=base_model,
            train=Path(labelled) / "train",
            validation=Path(labelled) / "heldout",
            test=test,
            head_config=config_from_params(HeadConfig, head_config, "head"),
            net_config=config_from_params(DownstreamConfig, net_config, "depth-network"),
            norm=DepthNorm.from_dict(norm),
            reference=reference,
            runs=runs,
            ceiling_n=ceiling["n"],
            ceiling_labellers=ceiling["labellers"],
            ceiling_runs=ceiling["runs"],
            min_epochs=ceiling["min_epochs"],
            n_boot=n_boot,
            work=work,
            log=logger.info,
        )
        write_text_atomic(metrics_file, json.dumps(record, indent=2) + "\n")
        # wall-clock times are not reproducible: beside the record (git), not in it (DVC)
        write_text_atomic(times_path(metrics_file), json.dumps(times, indent=2) + "\n")
        write_text_atomic(table_file, labellers_table(record, times))
        for unit in work.iterdir():  # the record is out: nothing left to resume
            shutil.rmtree(unit) if unit.is_dir() else unit.unlink()
    logger.info("labellers on %s:\n%s", test, labellers_table(record, times))
    return metrics_file
