"""What every section of the results report shares: :class:`Record` (a metrics record as the
report cites it), number formatting, paired differences with their verdict, Markdown tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dag_core.errors import DagError

#: the verdict of a paired difference whose CI contains 0
NO_DIFFERENCE = "no difference"


@dataclass(frozen=True)
class Record:
    """One metrics record as the report cites it.

    Args:
        data: The parsed record (a metrics JSON; for the sweep: series name → its CSV rows as
            ``{column: float}``).
        path: Where it was read from, as the report names it.
        plots: Plots and tables the section points to by path.
        title: A heading for an extra section (the further downstream records).
        command: The command that wrote the record, when it is not a DVC stage.
    """

    data: Mapping[str, Any]
    path: str
    plots: tuple[str, ...] = ()
    title: str | None = None
    command: str | None = None


# --- numbers and verdicts --------------------------------------------------------------------


def num(value: Any, digits: int, *, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (a ``+`` sign on request)."""
    return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"


def interval(row: Mapping[str, Any], key: str, digits: int, *, signed: bool = False) -> str:
    """``value [lo, hi]`` of ``row[key]`` and its ``key_ci_lo`` / ``key_ci_hi``."""
    lo, hi = row[f"{key}_ci_lo"], row[f"{key}_ci_hi"]
    return (
        f"{num(row[key], digits, signed=signed)} "
        f"[{num(lo, digits, signed=signed)}, {num(hi, digits, signed=signed)}]"
    )


def verdict(lo: float, hi: float) -> str:
    """``lower`` / ``higher`` when the CI of a difference excludes 0, else ``no difference``
    (the rule of :func:`dag_core.metrics.effect.verdict`)."""
    if hi < 0:
        return "lower"
    if lo > 0:
        return "higher"
    return NO_DIFFERENCE


def difference(row: Mapping[str, Any], key: str, digits: int, *, rel: bool = False) -> str:
    """A paired difference ``row[key_diff]`` with its CI and verdict (from the row's
    ``key_verdict``, else from the CI); with ``rel`` its relative change in % too."""
    diff = f"{key}_diff"
    text = interval(row, diff, digits, signed=True)
    if rel and f"{key}_rel_change" in row:
        text += f" ({100 * float(row[f'{key}_rel_change']):+.1f} %)"
    found = row.get(f"{key}_verdict")
    said = found if found is not None else verdict(row[f"{diff}_ci_lo"], row[f"{diff}_ci_hi"])
    return f"{text}: {said}"


# --- Markdown --------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one ``l`` / ``r`` per column (missing ones: ``l``)."""
    spec = align.ljust(len(header), "l")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in spec) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plots_note(record: Record) -> str:
    """The line pointing to ``record``'s plots and tables (empty without any)."""
    if not record.plots:
        return ""
    return "\nPlots and tables: " + ", ".join(f"`{p}`" for p in record.plots) + ".\n"


def require(data: Mapping[str, Any], keys: Iterable[str], path: str) -> None:
    """Raise :class:`DagError` unless ``data`` (read from ``path``) holds every key."""
    missing = [k for k in keys if k not in data]
    if missing:
        raise DagError(f"{path} lacks {', '.join(missing)}: not a record this report can render")


def counts_text(sizes: Sequence[int]) -> str:
    """Sample counts as ``a / b`` (``?`` when none)."""
    return " / ".join(str(n) for n in sizes) if sizes else "?"


def cell(value: Any) -> str:
    """``value`` as a table cell: ``—`` for None, ``|`` escaped."""
    if value is None:
        return "—"
    return str(value).replace("|", "\\|")
