"""Stage ``labellers``: the labeller record — which labeller the synthetic pairs should trust.

Every synthetic pair inherits its labeller's error, so this stage scores every candidate labeller
on the same exact-depth test split (the world test split of stage ``reference``; choices are made
on the held-out labelled pairs, never on it): the trained heads (at t = 0, as synthesis labels,
and averaged over timesteps), heads refitted with other settings (block set S, ensembles), and a
depth net trained from scratch on the same pairs — with fit times and paired CIs against the
reference labeller; and, with ``ceiling.n``, the ceiling of the features (refits on N exactly
labelled world pairs). Every parameter defaults to params.yaml's ``labellers`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.labellers import LabellersParams

    main(LabellersParams)

from typing import Any

from prefect import flow

from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.labellers import LabellersParams
from tasks.labellers import record_labellers

D = stage_defaults("labellers")


@flow(name="labellers", persist_result=False)
def labellers(
    base_model: str = D["base_model"],
    labelled: str = D["labelled"],
    heads: str = D["heads"],
    test: str = D["test"],
    norm: dict[str, Any] = D["norm"],
    head_config: dict[str, Any] = D["head_config"],
    net_config: dict[str, Any] = D["net_config"],
    labellers: dict[str, dict[str, Any]] = D["labellers"],
    reference: str = D["reference"],
    runs: int = D["runs"],
    ceiling: dict[str, Any] = D["ceiling"],
    n_boot: int = D["n_boot"],
    metrics_file: str = D["metrics_file"],
    table_file: str = D["table_file"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Write the labeller record (``metrics_file``) and its table (``table_file``)."""
    p = validate(LabellersParams, locals())
    runtime = check_runtime(p["runtime"])
    return record_labellers(
        p["base_model"],
        p["labelled"],
        p["heads"],
        p["test"],
        p["norm"],
        p["head_config"],
        p["net_config"],
        p["labellers"],
        p["reference"],
        p["runs"],
        p["ceiling"],
        p["n_boot"],
        p["metrics_file"],
        p["table_file"],
        runtime,
    )
