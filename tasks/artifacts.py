"""Prefect artifacts of a stage's flow run and the progress bars of its long loops.

What a run made is shown in the Prefect UI (and read back with the client) as artifacts: a
markdown summary of the files written and the key numbers (:func:`summary`), tables of metric
rows (:func:`table`), links to figures and reports (:func:`link`) and progress artifacts of
long loops (:class:`Progress`, which also draws a progress bar with an ETA on stdout). Outside
a flow or task run (a task body called directly, a library test) no artifact is made. Nothing
here changes a result: artifacts are written after the files they describe.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext
from tqdm import tqdm


def in_run() -> bool:
    """Whether this code runs inside a Prefect flow or task run (artifacts need one)."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a summary: ``digits`` decimals (floats), as is otherwise."""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary(
    key: str,
    title: str,
    wrote: Iterable[str],
    numbers: Mapping[str, str] | None = None,
) -> UUID | None:
    """The run's markdown summary (artifact ``key``): the files it wrote and its key numbers
    (result → value, with its CI where the stage has one)."""
    if not in_run():
        return None
    lines = [f"# {title}", "", "**Wrote**", ""]
    lines += [f"- `{path}`" for path in wrote]
    if numbers:
        lines += ["", "| result | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in numbers.items()]
    return create_markdown_artifact(
        "\n".join(lines) + "\n", key=key, description=f"{title}: what the run wrote"
    )


def table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> UUID | None:
    """A table artifact of metric rows (one mapping per row; floats rounded to 4 decimals)."""
    if not in_run() or not rows:
        return None
    cleaned = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    return create_table_artifact(cleaned, key=key, description=description)


def link(key: str, path: str | Path, text: str) -> UUID | None:
    """A link artifact to a file the run wrote (its absolute ``file://`` URI), if it exists."""
    if not in_run() or not Path(path).exists():
        return None
    uri = Path(path).resolve().as_uri()
    return create_link_artifact(uri, link_text=text, key=key, description=f"{text}: {path}")


#: the open :class:`Progress` objects that have an artifact key, by key (:func:`advance`)
_OPEN: dict[str, Progress] = {}


def advance(key: str, n: int = 1) -> None:
    """Advance the open progress of artifact ``key`` by ``n`` (nothing if none is open): a
    subflow reports to its parent flow's progress without holding the object (a flow run as
    ``python -m`` is pickled by value for a Dask worker, with the globals it names)."""
    progress = _OPEN.get(key)
    if progress is not None:
        progress.advance(n)


class Progress:
    """A loop's progress: a tqdm bar with an ETA on stdout and, inside a Prefect run, a
    progress artifact, both updated at a coarse cadence (every ``every`` of the total or
    ``seconds`` seconds, whichever comes first; never per step).

    Call it with the number of units done (``progress(k)``); it closes when ``k`` reaches the
    total, or on leaving it as a context manager (the artifact then holds the final count).
    ``key``: the artifact's key (None: a bar only, e.g. one of several nets training side by
    side, which report to one flow-level artifact).
    """

    def __init__(
        self,
        what: str,
        total: int,
        key: str | None = None,
        *,
        done: int = 0,
        every: float = 0.05,
        seconds: float = 10.0,
    ) -> None:
        self.what, self.total, self.done = what, max(1, total), done
        self.step = max(1, int(self.total * every))
        self.seconds = seconds
        self._sent, self._at = done, time.monotonic()
        interactive = sys.stdout.isatty()
        self.bar = tqdm(
            total=self.total,
            initial=done,
            desc=what,
            file=sys.stdout,
            mininterval=0.5 if interactive else seconds,
            dynamic_ncols=interactive,
            leave=True,
        )
        self.closed, self.key = False, key
        if key is not None:
            _OPEN[key] = self
        self.artifact: UUID | None = None
        if key is not None and in_run():
            self.artifact = create_progress_artifact(
                self._percent(done), key=key, description=self._describe(done)
            )

    def _percent(self, done: int) -> float:
        return round(100.0 * min(done, self.total) / self.total, 1)

    def _describe(self, done: int) -> str:
        return f"{self.what}: {done}/{self.total}"

    def __call__(self, done: int) -> None:
        """``done`` units are finished (a count, not an increment)."""
        self.bar.update(max(0, done - self.done))
        self.done = done
        now = time.monotonic()
        due = done - self._sent >= self.step or now - self._at >= self.seconds
        if self.artifact is not None and due and done < self.total:
            self._send(done)
            self._at = now
        if done >= self.total:
            self.close()

    def advance(self, n: int = 1) -> None:
        """``n`` more units are finished."""
        self(self.done + n)

    def _send(self, done: int) -> None:
        assert self.artifact is not None
        update_progress_artifact(
            self.artifact, self._percent(done), description=self._describe(done)
        )
        self._sent = done

    def close(self) -> None:
        """Close the bar; the artifact gets the final count."""
        if self.closed:
            return
        self.closed = True
        if self.key is not None and _OPEN.get(self.key) is self:
            del _OPEN[self.key]
        self.bar.close()
        if self.artifact is not None and self._sent != self.done:
            self._send(self.done)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def feature_bars(what: str, total: int) -> Progress:
    """A progress bar (no artifact) for one feature extraction of ``total`` images
    (:class:`dag_core.metrics.scorer.Scorer`'s ``progress``); it closes itself when done."""
    return Progress(what, total)


# --- each stage's artifacts, from the files it wrote ---------------------------------------


def _read(path: str | Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))


def _ci(row: Mapping[str, Any], key: str, digits: int) -> str:
    """``value [lo, hi]`` (95 % CI) of ``key`` in a metrics row, plus its verdict if recorded."""
    text = f"{row[key]:.{digits}f}"
    if f"{key}_ci_lo" in row:
        text += f" [{row[f'{key}_ci_lo']:.{digits}f}, {row[f'{key}_ci_hi']:.{digits}f}]"
    verdict = row.get(key.removesuffix("_diff") + "_verdict")
    return f"{text}: {verdict}" if verdict and key.endswith("_diff") else text


def written(stage: str, paths: Sequence[str]) -> UUID | None:
    """The summary of a stage whose results are files, not numbers (key ``<stage>-summary``,
    dashed: artifact keys are lowercase letters, digits and dashes)."""
    return summary(f"{stage.replace('_', '-')}-summary", f"stage {stage}", paths)


def heads_artifacts(out_dir: str, metrics_file: str) -> None:
    """Stage ``train_heads``: summary (held-out AbsRel at the first t, the baseline) and the
    table of held-out accuracy per head."""
    m = _read(metrics_file)
    numbers = {
        f"MLP-S held-out AbsRel, t = {m.get('t', 0)}": fmt(m["strong"]["abs_rel"]),
        "MLP-W held-out AbsRel": fmt(m["weak"]["abs_rel"]),
        "mean-depth baseline AbsRel": fmt(m["mean_depth_baseline"]["abs_rel"]),
        "held-out pairs": fmt(m.get("n_heldout", "")),
    }
    summary("train-heads-summary", "stage train_heads", [out_dir, metrics_file], numbers)
    rows = [{"head": k, **v} for k, v in m.items() if isinstance(v, Mapping) and "abs_rel" in v]
    table("train-heads-metrics", rows, f"held-out depth accuracy ({metrics_file})")


def synthesis_artifacts(
    out_dir: str, variants: Sequence[str], metrics_file: str | None, report_dir: str | None
) -> None:
    """Stage ``synthesize``: summary (samples per variant, guidance losses) and a link to the
    sample grid."""
    numbers: dict[str, str] = {}
    if metrics_file and Path(metrics_file).is_file():
        for name, row in _read(metrics_file).items():
            numbers[f"{name}: samples, L_dc, L_dp"] = (
                f"{row.get('n')}, {fmt(row.get('L_dc'), 4)}, {fmt(row.get('L_dp'), 4)}"
            )
    paths = [f"{out_dir}/{v}" for v in variants] + [p for p in (metrics_file, report_dir) if p]
    summary("synthesize-summary", "stage synthesize", paths, numbers)
    if report_dir:
        link("synthesize-samples", Path(report_dir) / "samples.png", "sample grid")


def dfid_artifacts(metrics_file: str) -> None:
    """Stage ``dfid``: summary (each variant − the reference with CIs) and the metric table."""
    m = _read(metrics_file)
    ref = m.get("reference_variant")
    numbers = {"real images": fmt(m.get("n_real", ""))}
    for name, row in (m.get(f"vs_{ref}") or {}).items():
        for key, label, digits in (
            ("consistency_abs_rel_diff", "consistency AbsRel", 3),
            ("dfid_diff", "dFID", 2),
            ("fid_diff", "FID", 2),
        ):
            numbers[f"{label}, {name} − {ref}"] = _ci(row, key, digits)
    summary("dfid-summary", "stage dfid", [metrics_file], numbers)
    keys = ("n", "dfid", "dfid_ci_lo", "dfid_ci_hi", "fid", "fid_ci_lo", "fid_ci_hi")
    keys += ("consistency_abs_rel", "kid_mean", "precision", "recall")
    rows = [
        {"variant": name, **{k: row[k] for k in keys if k in row}}
        for name, row in m["variants"].items()
    ]
    table("dfid-metrics", rows, f"dFID, FID, consistency per variant ({metrics_file})")


def downstream_artifacts(models_dir: str, metrics_file: str, table_file: str) -> None:
    """Stage ``downstream``: summary (the paired comparisons with CIs) and tables of the nets'
    AbsRel per split and set and of the comparisons."""
    m = _read(metrics_file)
    comparisons = m.get("comparisons", [])
    numbers = {
        f"AbsRel on {c['split']}, {c['set']} − {c['reference']}": _ci(c, "abs_rel_diff", 3)
        for c in comparisons
    }
    summary(
        "downstream-summary", "stage downstream", [models_dir, metrics_file, table_file], numbers
    )
    rows = [
        {"split": split, "set": name, **{k: r[k] for k in ("abs_rel", "delta1", "count") if k in r}}
        for split in ("world", "nyu")
        for name, r in (m.get(split) or {}).items()
    ]
    table("downstream-metrics", rows, f"depth nets' accuracy per test split ({metrics_file})")
    keys = ("split", "set", "reference", "abs_rel_diff", "abs_rel_diff_ci_lo")
    keys += ("abs_rel_diff_ci_hi", "abs_rel_verdict")
    table(
        "downstream-comparisons",
        [{k: c[k] for k in keys if k in c} for c in comparisons],
        "paired AbsRel differences with 95 % CIs",
    )


def report_artifacts(out_file: str, headline_file: str, samples: Sequence[str]) -> None:
    """Stage ``report``: summary (the headline scalars), their table, links to the report and
    the sample grid."""
    headline = _read(headline_file)
    numbers = {k: fmt(v) for k, v in headline.items()}
    summary("report-summary", "stage report", [out_file, headline_file], numbers)
    table("report-headline", [headline], f"headline metrics ({headline_file})")
    link("report-results", out_file, "measurement report")
    for path in samples:
        link("report-samples", path, "sample grid")
