"""Stage ``report``: the measurement record ``reports/results.md``, from the committed metrics.

Reads the metrics each section of params.yaml's ``report`` group names — the depth heads
(``train_heads``), the guidance losses (``synthesize``), dFID / FID / consistency (``dfid``), the
guidance-strength sweep's CSVs (``sweep``), the downstream depth nets (``downstream``) and any
further downstream records (``downstream_extra``, e.g. a profile's larger run) — and writes one
Markdown report: what each number is, how it was measured (sample counts, CIs, verdicts) and
where its plots are (:mod:`dag_core.results`). Its headline table is the README's. Nothing is
computed here: the report changes exactly when the metrics do (``tests/test_results.py``).
Every parameter defaults to params.yaml's ``report`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect loads (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.report import ReportParams

    main(ReportParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.schema.base import validate
from flows.schema.report import ReportParams
from tasks.report import write_results_report

D = stage_defaults("report")


@flow(name="report", persist_result=False)
def report(
    heads: dict[str, Any] = D["heads"],
    synthesis: dict[str, Any] = D["synthesis"],
    dfid: dict[str, Any] = D["dfid"],
    sweep: dict[str, Any] = D["sweep"],
    downstream: dict[str, Any] = D["downstream"],
    downstream_extra: list[dict[str, Any]] = D["downstream_extra"],
    labellers: list[dict[str, Any]] = D["labellers"],
    out_file: str = D["out_file"],
) -> str:
    """Write ``out_file``: every section's metrics (``{metrics, plots}``; the extra downstream
    records and the labeller records also ``{title, command}``) as one Markdown record."""
    p = validate(ReportParams, locals())
    return write_results_report(p)
