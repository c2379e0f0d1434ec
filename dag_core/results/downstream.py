"""The report's downstream depth network sections, and reading a downstream record in either
format (the older ``paired`` mapping or a ``comparisons`` list)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dag_core.errors import DagError
from dag_core.results.markdown import (
    Record,
    cell,
    counts_text,
    difference,
    interval,
    num,
    plots_note,
    table,
)

#: depth metrics of the downstream tables: key → column label
DEPTH_LABELS = {"abs_rel": "AbsRel ↓", "rmse": "RMSE ↓", "delta1": "δ<1.25 ↑"}
#: paired metrics of the downstream comparisons: key → label
PAIRED_LABELS = {"abs_rel": "AbsRel", "delta1": "δ<1.25"}
#: top-level keys of a downstream record that are not test splits
DOWNSTREAM_KEYS = frozenset(
    {"paired", "comparisons", "diagnostic", "curves", "training_sets", "runs", "n_boot"}
    | {"confidence"}
)


def downstream_splits(data: Mapping[str, Any]) -> dict[str, Mapping[str, Mapping[str, Any]]]:
    """The test splits of a downstream record: split → training set → its metric means."""
    return {
        key: value
        for key, value in data.items()
        if key not in DOWNSTREAM_KEYS
        and isinstance(value, Mapping)
        and value
        and all(isinstance(row, Mapping) and "abs_rel" in row for row in value.values())
    }


def downstream_comparisons(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every paired comparison of a downstream record as rows ``{split, set, reference,
    abs_rel_diff, …}``: its ``comparisons`` list, or its older ``paired`` mapping (each set −
    ``paired.reference`` per split)."""
    if data.get("comparisons"):
        return [dict(row) for row in data["comparisons"]]
    paired = data.get("paired")
    if not paired:
        return []
    ref = paired["reference"]
    return [
        {"split": split, "set": name, "reference": ref, **row}
        for split, rows in paired.items()
        if isinstance(rows, Mapping)
        for name, row in rows.items()
    ]


def downstream_settings(data: Mapping[str, Any]) -> tuple[int, int, float]:
    """(training runs per set, bootstrap resamples, confidence) of a downstream record."""
    source = data if "runs" in data else data.get("paired") or {}
    return (
        int(source.get("runs", 1)),
        int(source.get("n_boot", 0)),
        float(source.get("confidence", 0.95)),
    )


def downstream_section(record: Record, heading: str) -> str:
    """One downstream record: per-split metrics, paired comparisons, and (when present) the
    training sets, the diagnostic and the AbsRel-vs-N curves."""
    d = record.data
    splits = downstream_splits(d)
    if not splits:
        raise DagError(f"{record.path} holds no test split with AbsRel")
    runs, n_boot, confidence = downstream_settings(d)
    scope = (
        "one training run per set: the CIs cover the test images only"
        if runs == 1
        else f"{runs} training runs per set, run r of every set with the same seed: the CIs "
        "resample runs and test images, and each metric is the mean over runs"
    )
    text = f"## {heading} (`{record.path}`)\n\n"
    if record.command:
        text += f"Measured with\n\n```bash\n{record.command}\n```\n\n"
    text += (
        "A small depth U-Net is trained on each training set with the same network and budget, "
        "then tested on each test split (paper §5.3): `world` is the procedural world's "
        "held-out test split, `nyu` real NYU-Depth v2 test pairs (Eigen crop, median "
        f"scaling). {scope[0].upper()}{scope[1:]}."
    )
    if n_boot:
        text += (
            f" Paired differences are set − reference on the same test images, "
            f'{round(100 * confidence)} % bootstrap CIs ({n_boot} resamples); "lower" / '
            '"higher" when the CI excludes 0. AbsRel: lower is better; δ<1.25: higher is better.'
        )
    text += "\n"
    sets = d.get("training_sets")
    if sets:
        cols = [
            c for c in ("data", "regime", "labels", "pairs") if any(c in s for s in sets.values())
        ]
        text += "\n### Training sets\n\n" + table(
            ["training set", *cols],
            [[name, *(cell(info.get(c)) for c in cols)] for name, info in sets.items()],
        )
    for split, rows in splits.items():
        counts = sorted({int(r["count"]) for r in rows.values() if "count" in r})
        sd = any("abs_rel_run_sd" in r for r in rows.values())
        header = ["training set", *DEPTH_LABELS.values()] + (["AbsRel run SD"] if sd else [])
        body = [
            [
                name,
                *(num(r[k], 3) for k in DEPTH_LABELS),
                *([num(r["abs_rel_run_sd"], 3) if "abs_rel_run_sd" in r else "—"] if sd else []),
            ]
            for name, r in rows.items()
        ]
        images = f" ({counts_text(counts)} test images)" if counts else ""
        text += f"\n### {split}{images}\n\n" + table(header, body, "l" + "r" * (len(header) - 1))
    comparisons = downstream_comparisons(d)
    if comparisons:
        text += "\n### Paired differences\n\n" + table(
            ["split", "set − reference", *(f"{v} diff" for v in PAIRED_LABELS.values())],
            [
                [
                    str(row["split"]),
                    f"{row['set']} − {row['reference']}",
                    *(difference(row, k, 3) for k in PAIRED_LABELS),
                ]
                for row in comparisons
            ],
        )
    diagnostic = d.get("diagnostic")
    if diagnostic and diagnostic.get("sets"):
        text += (
            f"\n### Diagnostic ({diagnostic.get('split', '?')} test split)\n\n"
            "Sets trained at the same number of pairs and budget on other images or labels, "
            "side by side: what limits the synthetic pairs.\n\n"
        )
        text += table(
            ["training set", "images", "labels", "pairs", "AbsRel ↓", "δ<1.25 ↑"],
            [
                [
                    str(row["set"]),
                    cell(row.get("data")),
                    cell(row.get("labels")),
                    cell(row.get("pairs")),
                    interval(row, "abs_rel", 3),
                    interval(row, "delta1", 3) if "delta1_ci_lo" in row else num(row["delta1"], 3),
                ]
                for row in diagnostic["sets"]
            ],
        )
    curves = d.get("curves")
    if curves:
        text += (
            "\n### AbsRel against the number of synthetic pairs\n\n"
            "Each set trained on its first N pairs, tested on the first split.\n\n"
        )
        text += table(
            ["set", "N", "AbsRel ↓", "δ<1.25 ↑"],
            [
                [name, str(p["n"]), interval(p, "abs_rel", 3), num(p["delta1"], 3)]
                for name, points in curves.items()
                for p in points
            ],
            "lrlr",
        )
    return text + plots_note(record)
