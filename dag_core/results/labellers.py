"""The labeller record (stage ``labellers``) as Markdown: its table file and its report section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dag_core.results.markdown import Record, difference, interval, plots_note, require, table

KEYS = ("test", "runs", "reference", "labellers", "comparisons", "ceiling")


def times_path(metrics_file: str) -> str:
    """Where a labeller record's fit times are kept: ``<record>.times.json`` beside it."""
    return str(metrics_file).removesuffix(".json") + ".times.json"


def _seconds(times: Mapping[str, float], key: str) -> str:
    return f"{times[key]:.0f}" if key in times else "—"


def labellers_table(data: Mapping[str, Any], times: Mapping[str, float] | None = None) -> str:
    """Each labeller's test AbsRel / δ<1.25 [95 % CI], fit time (from ``times``, the run's
    ``.times.json``: not reproducible, so not in the record) and paired difference to the
    reference labeller; then the ceiling rows (AbsRel vs N exact labels), when there are any."""
    times = times or {}
    ref = data["reference"]
    diffs = {row["set"]: row for row in data["comparisons"]}
    rows = [
        (
            name,
            row["kind"],
            interval(row, "abs_rel", 3),
            interval(row, "delta1", 3),
            _seconds(times, name),
            str(row["runs"]),
            difference(diffs[name], "abs_rel", 3) if name in diffs else "(reference)",
        )
        for name, row in data["labellers"].items()
    ]
    text = table(
        ["labeller", "kind", "AbsRel ↓", "δ<1.25 ↑", "fit (s)", "runs", f"AbsRel − {ref}"],
        rows,
        "llrrrrl",
    )
    if data["ceiling"]:
        text += "\n" + table(
            ["labeller", "exact pairs N", "AbsRel ↓", "δ<1.25 ↑", "fit (s)", "runs"],
            [
                (
                    r["labeller"],
                    str(r["n"]),
                    interval(r, "abs_rel", 3),
                    interval(r, "delta1", 3),
                    _seconds(times, f"{r['labeller']}@{r['n']}"),
                    str(r.get("runs", 1)),
                )
                for r in data["ceiling"]
            ],
            "lrrrrr",
        )
    return text


def labellers_section(record: Record) -> str:
    """Where the labeller stands: every labeller on the same exact-depth test split."""
    data = record.data
    require(data, KEYS, record.path)
    test = data["test"]
    command = f" Made by `{record.command}`." if record.command else ""
    return (
        f"## Labellers: {record.title or 'which labeller the synthetic pairs get'} "
        f"(`{record.path}`)\n\n"
        "Every synthetic pair inherits its labeller's error, so every candidate labeller is "
        f"scored on the same {test['count']} images of `{test['path']}` (exact depth; choices "
        "are made on the held-out labelled pairs, never here). `heads`: the trained heads; "
        "`fit`: heads fitted here with other settings; `net`: a depth net from scratch on the "
        "same labelled pairs. Fitted labellers: one fit per run (seeds + run), CIs over runs × "
        f"images (95 %, bootstrap); differences are paired on the same images against "
        f"`{data['reference']}`. The ceiling refits on N exactly labelled world pairs (fresh "
        f"scenes). Fit times are one machine's wall clock (`{times_path(record.path)}`)."
        f"{command}\n\n" + labellers_table(data, data.get("times")) + plots_note(record)
    )
