"""The results report: the committed metrics records as one Markdown measurement record.

Pure formatting — parsed metrics records in, Markdown out; no file is read or written here.
Stage ``report`` (``flows/report.py``) reads the files its params group names and writes
``reports/results.md`` (:func:`results_report`); the README's headline table is
:func:`headline_table` of the same records, and ``tests/test_results.py`` checks that both match
the committed metrics, so a metrics change without a report refresh fails the tests.

Each section says what its numbers are and how they were measured (sample counts, bootstrap
CIs, verdicts) and points to its plots by path. Every record may come in the formats the stages
have written: the downstream record with the older ``paired`` mapping or with a ``comparisons``
list, and with or without ``training_sets``, ``diagnostic`` and ``curves`` (each rendered when
present, skipped when absent).

One responsibility per module: :mod:`~dag_core.results.markdown` (:class:`Record`, numbers,
paired differences and verdicts, tables), :mod:`~dag_core.results.generation` (the sections on
the depth heads, the samples' guidance losses and dFID), :mod:`~dag_core.results.sweep` (the
guidance strength sweep), :mod:`~dag_core.results.downstream` (the downstream depth network
records) and :mod:`~dag_core.results.report` (the headline table and the whole report). Import
from here.
"""

from dag_core.results.downstream import (
    DEPTH_LABELS,
    DOWNSTREAM_KEYS,
    PAIRED_LABELS,
    downstream_comparisons,
    downstream_section,
    downstream_splits,
)
from dag_core.results.generation import dfid_section, heads_section, synthesis_section
from dag_core.results.markdown import (
    NO_DIFFERENCE,
    Record,
    difference,
    interval,
    num,
    table,
    verdict,
)
from dag_core.results.report import (
    GENERATED,
    HEADLINE_KEYS,
    headline_metrics,
    headline_rows,
    headline_table,
    results_report,
)
from dag_core.results.sweep import MODE_SERIES, sweep_section

__all__ = [
    "DEPTH_LABELS",
    "DOWNSTREAM_KEYS",
    "GENERATED",
    "HEADLINE_KEYS",
    "MODE_SERIES",
    "NO_DIFFERENCE",
    "PAIRED_LABELS",
    "Record",
    "dfid_section",
    "difference",
    "downstream_comparisons",
    "downstream_section",
    "downstream_splits",
    "headline_metrics",
    "headline_rows",
    "headline_table",
    "heads_section",
    "interval",
    "num",
    "results_report",
    "sweep_section",
    "synthesis_section",
    "table",
    "verdict",
]
