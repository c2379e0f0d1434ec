"""The downstream stage's report: the metrics record and its Markdown tables.

:func:`markdown_table` lists each training set's metrics on one test split;
:func:`comparison_table` each (set, reference) paired difference with its 95 % CI and verdict;
:func:`diagnostic_table` a group of sets trained at the same N and budget, side by side with CIs
(which images, which labels); :func:`curve_rows` a set's AbsRel against its number of training
pairs. :func:`downstream_report` assembles them from
:func:`~dag_core.downstream.evaluation.evaluate_training_sets`' output (the stage writes the record
as JSON, the tables as Markdown, the curves as CSVs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dag_core.downstream.evaluation import PAIRED_METRICS, compare_sets, mean_with_ci
from dag_core.errors import DagError

METRIC_LABELS = {
    "abs_rel": "AbsRel ↓",
    "sq_rel": "SqRel ↓",
    "rmse": "RMSE ↓",
    "rmse_log": "RMSE log ↓",
    "log10": "log10 ↓",
    "delta1": "δ<1.25 ↑",
    "delta2": "δ<1.25² ↑",
    "delta3": "δ<1.25³ ↑",
}
#: what a training set is, as the tables describe it (keys of the stage's ``training_sets``)
SET_COLUMNS = ("pairs", "regime", "labels")


def markdown_table(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("abs_rel", "rmse", "delta1"),
    sets: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """A Markdown table, one row per training set, 3 decimals; with ``sets`` (name → its
    ``pairs``, ``regime`` and ``labels``) those columns come first."""
    if not results:
        raise DagError("markdown_table got no results")
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise DagError(f"unknown metric {unknown[0]!r}; expected one of {', '.join(METRIC_LABELS)}")
    info = list(SET_COLUMNS) if sets else []
    lines = [
        "| training set | " + " | ".join([*info, *(METRIC_LABELS[m] for m in metrics)]) + " |",
        "|---|" + "---|" * len(info) + "---:|" * len(metrics),
    ]
    for name, row in results.items():
        missing = [m for m in metrics if m not in row]
        if missing:
            raise DagError(f"results for {name!r} lack metric {missing[0]!r}")
        cells = [str(sets[name][c]) for c in info] if sets else []
        cells += [f"{float(row[m]):.3f}" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _diff_cell(row: Mapping[str, Any], metric: str) -> str:
    return (
        f"{row[f'{metric}_diff']:+.3f} [{row[f'{metric}_diff_ci_lo']:+.3f}, "
        f"{row[f'{metric}_diff_ci_hi']:+.3f}]: {row[f'{metric}_verdict']}"
    )


def _scope(runs: int) -> str:
    if runs == 1:
        return "one training run per set: the CI covers test images only"
    return f"{runs} training runs per set (seeds paired): the CI resamples runs and test images"


def comparison_table(rows: Sequence[Mapping[str, Any]], runs: int = 1) -> str:
    """Markdown: each comparison's set − reference per split, AbsRel and δ<1.25 with CIs."""
    lines = [
        f"### paired differences (same test images, 95 % bootstrap CI; {_scope(runs)}; "
        "AbsRel: lower is better, δ<1.25: higher is better)",
        "",
        "| split | set − reference | AbsRel diff | δ<1.25 diff |",
        "|---|---|---|---|",
    ]
    for row in rows:
        cells = [_diff_cell(row, m) for m in PAIRED_METRICS]
        lines.append(
            f"| {row['split']} | {row['set']} − {row['reference']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def diagnostic_table(
    names: Sequence[str],
    per_image: Mapping[str, Mapping[str, Any]],
    sets: Mapping[str, Mapping[str, Any]],
    split: str,
    *,
    n_boot: int = 1000,
) -> tuple[list[dict[str, Any]], str]:
    """The diagnostic: sets trained at the same N and budget on other images or labels, each
    set's mean AbsRel and δ<1.25 on ``split`` with 95 % CIs. Returns (rows, Markdown)."""
    rows = []
    for name in names:
        row: dict[str, Any] = {"set": name, **{k: sets[name][k] for k in ("data", "labels")}}
        row["pairs"] = sets[name]["pairs"]
        for metric in PAIRED_METRICS:
            ci = mean_with_ci(per_image[split][name][metric], n_boot=n_boot)
            row[metric] = ci["mean"]
            row[f"{metric}_ci_lo"], row[f"{metric}_ci_hi"] = ci["ci_lo"], ci["ci_hi"]
        rows.append(row)
    lines = [
        f"### diagnostic ({split} test split; same N and budget: what limits the synthetic pairs)",
        "",
        "| training set | images | labels | pairs | AbsRel ↓ [95 % CI] | δ<1.25 ↑ [95 % CI] |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row[m]:.3f} [{row[f'{m}_ci_lo']:.3f}, {row[f'{m}_ci_hi']:.3f}]"
            for m in PAIRED_METRICS
        ]
        lines.append(
            f"| {row['set']} | {row['data']} | {row['labels']} | {row['pairs']} | "
            + " | ".join(cells)
            + " |"
        )
    return rows, "\n".join(lines) + "\n"


def curve_rows(
    points: Mapping[int, str], per_image: Mapping[str, Mapping[str, Any]], *, n_boot: int = 1000
) -> list[dict[str, float]]:
    """One set's AbsRel against N: ``points`` maps N to the training set trained on N pairs;
    rows ``{"n", "abs_rel", "abs_rel_ci_lo", "abs_rel_ci_hi", "delta1"}`` in N order."""
    rows = []
    for n in sorted(points):
        values = per_image[points[n]]
        ci = mean_with_ci(values["abs_rel"], n_boot=n_boot)
        rows.append(
            {
                "n": n,
                "abs_rel": ci["mean"],
                "abs_rel_ci_lo": ci["ci_lo"],
                "abs_rel_ci_hi": ci["ci_hi"],
                "delta1": float(values["delta1"].mean()),
            }
        )
    return rows


def downstream_report(
    results: dict[str, Any],
    per_image: Mapping[str, Mapping[str, Any]],
    *,
    sets: Mapping[str, Mapping[str, Any]],
    comparisons: Sequence[tuple[str, str]] = (),
    diagnostic: Sequence[str] = (),
    n_boot: int = 1000,
    runs: int = 1,
) -> tuple[dict[str, Any], str]:
    """(metrics record, Markdown) of the downstream stage.

    Args:
        results: ``results[split][set]`` metric means (extended in place into the record).
        per_image: ``per_image[split][set]`` per-image metrics, (N,) or (R, N) arrays.
        sets: What each training set is (``data``, ``regime``, ``labels``, ``pairs``, …).
        comparisons: (set, reference) pairs: paired differences on every split.
        diagnostic: Sets shown side by side with CIs on the first split (same N and budget).
        n_boot: Bootstrap resamples of every CI.
        runs: Training runs per set (the CIs resample them too).
    """
    from dag_core.metrics.effect import CONFIDENCE  # torch-fidelity on first use

    tables = [
        f"### {split}\n\n{markdown_table(rows, sets=sets)}"
        for split, rows in results.items()
        if split in per_image
    ]
    results["training_sets"] = {name: dict(sets[name]) for name in sets}
    results["runs"], results["n_boot"], results["confidence"] = runs, n_boot, CONFIDENCE
    if comparisons:
        rows = [
            {"split": split, **row}
            for split in per_image
            for row in compare_sets(per_image[split], comparisons, n_boot=n_boot)
        ]
        results["comparisons"] = rows
        tables.append(comparison_table(rows, runs))
    if diagnostic:
        split = next(iter(per_image))
        rows, text = diagnostic_table(diagnostic, per_image, sets, split, n_boot=n_boot)
        results["diagnostic"] = {"split": split, "sets": rows}
        tables.append(text)
    return results, "\n\n".join(tables) + "\n"
