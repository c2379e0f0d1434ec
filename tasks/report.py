"""Task of stage ``report``: read the committed metrics files, write ``reports/results.md``.

The formatting is :mod:`dag_core.results` (records in, Markdown out); here the files are read
(:func:`read_records`) and the report written atomically (:func:`write_results_report`).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dag_core.atomic import write_text_atomic
from dag_core.errors import DagError
from dag_core.filechecks import read_json_object
from dag_core.results import Record, results_report
from tasks import run_logger, stage_task


def read_json(path: str) -> dict[str, Any]:
    """A metrics JSON file as a mapping (DagError naming the file if it is not one; the check
    the stage's params check runs first, :func:`dag_core.filechecks.read_json_object`)."""
    return read_json_object(path)


def read_sweep(directory: str) -> dict[str, list[dict[str, float]]]:
    """The sweep's CSVs: series name (file stem) → its rows, every value a float."""
    series: dict[str, list[dict[str, float]]] = {}
    for path in sorted(Path(directory).glob("*.csv")):
        with path.open(newline="") as fh:
            try:
                series[path.stem] = [
                    {k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)
                ]
            except (TypeError, ValueError) as exc:
                raise DagError(f"{path} holds a value that is not a number: {exc}") from exc
    if not series:
        raise DagError(f"{directory} holds no sweep CSV (run stage sweep first)")
    return series


def _record(section: Mapping[str, Any], data: Mapping[str, Any]) -> Record:
    return Record(
        data=data,
        path=section["metrics"],
        plots=tuple(section["plots"]),
        title=section.get("title"),
        command=section.get("command"),
    )


def _with_times(path: str) -> dict[str, Any]:
    """A labeller record with its fit times (``times``), when its ``.times.json`` is there."""
    from dag_core.results.labellers import times_path

    data = read_json(path)
    if Path(times_path(path)).is_file():
        data["times"] = read_json(times_path(path))
    return data


def read_records(
    heads: Mapping[str, Any],
    synthesis: Mapping[str, Any],
    dfid: Mapping[str, Any],
    sweep: Mapping[str, Any],
    downstream: Mapping[str, Any],
    downstream_extra: Sequence[Mapping[str, Any]],
    labellers: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The records each section of the report renders, read from the files its params name
    (``{metrics, plots}`` per section): keyword arguments of
    :func:`dag_core.results.results_report`."""
    return {
        "heads": _record(heads, read_json(heads["metrics"])),
        "synthesis": _record(synthesis, read_json(synthesis["metrics"])),
        "dfid": _record(dfid, read_json(dfid["metrics"])),
        "sweep": _record(sweep, read_sweep(sweep["metrics"])),
        "downstream": _record(downstream, read_json(downstream["metrics"])),
        "extra": [_record(e, read_json(e["metrics"])) for e in downstream_extra],
        "labellers": [_record(e, _with_times(e["metrics"])) for e in labellers],
    }


def render_results(params: Mapping[str, Any]) -> str:
    """The report's Markdown for a checked ``report`` params group (no file written)."""
    records = read_records(
        params["heads"],
        params["synthesis"],
        params["dfid"],
        params["sweep"],
        params["downstream"],
        params["downstream_extra"],
        params["labellers"],
    )
    missing = [
        p
        for section in ("heads", "synthesis", "dfid", "sweep", "downstream")
        for p in params[section]["plots"]
        if not Path(p).exists()
    ] + [
        p
        for e in (*params["downstream_extra"], *params["labellers"])
        for p in e["plots"]
        if not Path(p).exists()
    ]
    if missing:
        run_logger().warning("the report points to plots that do not exist: %s", missing)
    return results_report(**records)


@stage_task
def write_results_report(params: dict[str, Any]) -> str:
    """Render the report of a checked ``report`` params group and write ``out_file``
    atomically; returns its path."""
    text = render_results(params)
    write_text_atomic(params["out_file"], text)
    run_logger().info("wrote %s (%d lines)", params["out_file"], text.count("\n"))
    return params["out_file"]
