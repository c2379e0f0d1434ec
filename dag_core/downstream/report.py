"""The downstream stage's report: the metrics record and its Markdown tables.

:func:`markdown_table` lists each training set's metrics per split; :func:`paired_table` each
set's paired difference to the reference set with its 95 % CI and verdict;
:func:`downstream_report` assembles both from :func:`~dag_core.downstream.evaluation.
evaluate_training_sets`' output (the stage writes the record as JSON, the tables as Markdown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dag_core.downstream.evaluation import PAIRED_METRICS, paired_comparison
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


def markdown_table(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("abs_rel", "rmse", "delta1"),
) -> str:
    """A Markdown table, one row per training set (e.g. labelled, unguided, dag), 3 decimals."""
    if not results:
        raise DagError("markdown_table got no results")
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise DagError(f"unknown metric {unknown[0]!r}; expected one of {', '.join(METRIC_LABELS)}")
    lines = [
        "| training set | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for name, row in results.items():
        missing = [m for m in metrics if m not in row]
        if missing:
            raise DagError(f"results for {name!r} lack metric {missing[0]!r}")
        lines.append(f"| {name} | " + " | ".join(f"{float(row[m]):.3f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def paired_table(
    paired: Mapping[str, Mapping[str, Mapping[str, Any]]], reference: str, runs: int = 1
) -> str:
    """Markdown: each set − ``reference`` per split, AbsRel and δ<1.25 with 95 % CIs."""
    scope = (
        "one training run per set: the CI covers test images only"
        if runs == 1
        else f"{runs} training runs per set (seeds paired): the CI resamples runs and test images"
    )
    lines = [
        f"### paired difference vs {reference} (same test images, 95 % bootstrap CI; "
        f"{scope}; AbsRel: lower is better, δ<1.25: higher is better)",
        "",
        "| split | training set | AbsRel diff | δ<1.25 diff |",
        "|---|---|---|---|",
    ]
    for split, rows in paired.items():
        for name, row in rows.items():
            cells = [
                f"{row[f'{m}_diff']:+.3f} [{row[f'{m}_diff_ci_lo']:+.3f}, "
                f"{row[f'{m}_diff_ci_hi']:+.3f}]: {row[f'{m}_verdict']}"
                for m in PAIRED_METRICS
            ]
            lines.append(f"| {split} | {name} − {reference} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def downstream_report(
    results: dict[str, Any],
    per_image: Mapping[str, Mapping[str, Any]],
    reference: str | None,
    *,
    n_boot: int = 1000,
    runs: int = 1,
) -> tuple[dict[str, Any], str]:
    """(metrics record, Markdown) of the downstream stage.

    ``results[split][set]`` and ``per_image[split][set]`` as returned by
    :func:`~dag_core.downstream.evaluation.evaluate_training_sets`. With a ``reference`` set
    among two or more, the record gains ``paired`` (each other set − reference per split, with
    ``n_boot`` bootstrap resamples over ``runs`` training runs and the test images) and the
    Markdown a paired table after the per-split tables. ``results`` is extended in place.
    """
    from dag_core.metrics.effect import CONFIDENCE  # torch-fidelity on first use

    names = next(iter(per_image.values()), {})
    tables = [f"### {split}\n\n{markdown_table(rows)}" for split, rows in results.items()]
    if reference is not None and reference in names and len(names) > 1:
        paired = {
            split: paired_comparison(per_image[split], reference, n_boot=n_boot)
            for split in per_image
        }
        results["paired"] = {
            "reference": reference,
            "n_boot": n_boot,
            "confidence": CONFIDENCE,
            "runs": runs,
        }
        results["paired"].update(paired)
        tables.append(paired_table(paired, reference, runs))
    return results, "\n\n".join(tables) + "\n"
