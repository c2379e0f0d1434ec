"""The report's guidance strength sweep section (the ``sweep`` stage's CSVs)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from dag_core.errors import DagError
from dag_core.results.markdown import Record, difference, interval, num, plots_note, require, table

#: a sweep series of a scale mode and window (``paper_0-0.6``), as opposed to a named remedy
MODE_SERIES = re.compile(r"^[A-Za-z]+_[0-9.]+-[0-9.]+$")


def _series_order(name: str) -> tuple[int, str]:
    return (0 if MODE_SERIES.match(name) else 1, name)


def _sweep_row(name: str, row: Mapping[str, float]) -> list[str]:
    base = float(row["w"]) == 0
    return [
        name,
        f"{float(row['w']):g}",
        interval(row, "dfid", 1),
        num(row["fid"], 1),
        num(row["consistency_abs_rel"], 3),
        *(
            "(reference)" if base else difference(row, key, digits)
            for key, digits in (("dfid", 1), ("fid", 1), ("consistency_abs_rel", 3))
        ),
    ]


def sweep_section(record: Record) -> str:
    """dFID, FID and consistency against the guidance scale w, one series per scale mode and
    window and per remedy (the ``sweep`` stage's CSVs). A w = 0 point that every series shares
    (the same unguided samples) is shown once."""
    series = record.data
    if not series:
        raise DagError(f"{record.path} holds no sweep series")
    names = sorted(series, key=_series_order)
    for name in names:
        for row in series[name]:
            require(row, ("w", "dfid", "fid", "dfid_diff", "consistency_abs_rel_diff"), record.path)
    zeros = [dict(r) for name in names for r in series[name] if float(r["w"]) == 0]
    shared = len(zeros) == len(names) and all(z == zeros[0] for z in zeros)
    rows = [_sweep_row("every series", zeros[0])] if shared else []
    rows += [
        _sweep_row(name, row)
        for name in names
        for row in series[name]
        if not (shared and float(row["w"]) == 0)
    ]
    floor = next((r for name in names for r in series[name] if "floor_dfid" in r), None)
    text = (
        f"## Guidance strength sweep (`{record.path}`)\n\n"
        "Stage `sweep` samples the same seeds at every w = w_dc = w_dp of each series: a scale "
        "mode and guidance window (`<mode>_<lo>-<hi>`), or a named remedy (`sweep.remedies`: "
        "other guidance settings on the first mode and window). Its params group sets the "
        "sample count and seed. Every point is scored like the `dfid` stage; the differences "
        "are paired with the w = 0 point (same seeds), with 95 % bootstrap CIs and the verdict "
        '"lower" / "higher" when the CI excludes 0.'
    )
    if floor is not None:
        text += (
            " Held-out real pairs at the same count score dFID "
            f"{num(floor['floor_dfid'], 1)}, FID {num(floor['floor_fid'], 1)} and consistency "
            f"AbsRel {num(floor['floor_consistency_abs_rel'], 3)} (the figure's dashed line)."
        )
    header = ["series", "w", "dFID ↓", "FID ↓", "consistency AbsRel ↓"]
    header += ["dFID − w=0", "FID − w=0", "consistency AbsRel − w=0"]
    return text + "\n\n" + table(header, rows, "lrlrr") + plots_note(record)
