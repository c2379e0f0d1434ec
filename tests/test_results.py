"""The results report (stage ``report``) and the README's headline table match the committed
metrics, and the renderer (:mod:`dag_core.results`) formats small fixed records exactly.

A metrics change without a report refresh fails here: rerun ``dvc repro report`` (or
``python -m flows.report``), then refresh the README's table with
``DAG_WRITE_README=1 python -m pytest tests/test_results.py -k readme``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dag_core.errors import DagError, ParamError
from dag_core.results import (
    Record,
    difference,
    downstream_comparisons,
    downstream_section,
    downstream_splits,
    headline_rows,
    headline_table,
    heads_section,
    results_report,
    sweep_section,
    table,
    verdict,
)
from flows._params import stage_defaults
from flows.schema.base import validate
from flows.schema.report import ReportParams

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADLINE = re.compile(
    r"(<!-- headline: generated from metrics/[^\n]*-->\n)(.*?)(<!-- /headline -->)", re.S
)
TEMPLATE = re.compile(r"\$\{([^}]*)\}")


def committed_records() -> dict[str, Any]:
    """The records params.yaml's ``report`` group names, read from the checkout."""
    from tasks.report import read_records

    p = validate(ReportParams, stage_defaults("report"))
    keys = ("heads", "synthesis", "dfid", "sweep", "downstream", "downstream_extra", "labellers")
    return read_records(*(p[k] for k in keys))


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the project folder: the params name files relative to it."""
    monkeypatch.chdir(ROOT)
    return ROOT


# --- the committed files ---------------------------------------------------------------------


def test_committed_report_is_the_committed_metrics_rendered(at_root: Path) -> None:
    """reports/results.md is exactly what stage ``report`` writes from the committed metrics."""
    from tasks.report import render_results

    p = validate(ReportParams, stage_defaults("report"))
    fresh = render_results(p)
    committed = (at_root / p["out_file"]).read_text()
    assert fresh == committed, (
        f"{p['out_file']} is stale: run `dvc repro report` (or `python -m flows.report`)"
    )


def test_readme_headline_is_the_committed_metrics_rendered(at_root: Path) -> None:
    """The README's headline table is :func:`headline_table` of the committed metrics."""
    records = committed_records()
    fresh = headline_table(
        records["heads"],
        records["dfid"],
        [records["downstream"], *records["extra"]],
        records["labellers"],
    )
    text = README.read_text()
    match = HEADLINE.search(text)
    assert match, "README.md lacks the <!-- headline: ... --> ... <!-- /headline --> block"
    if os.environ.get("DAG_WRITE_README") == "1":
        README.write_text(text[: match.start(2)] + fresh + text[match.end(2) :])
        return
    assert match.group(2) == fresh, (
        "README.md's headline table differs from the metrics: rerun with DAG_WRITE_README=1 "
        f"to write\n{fresh}"
    )


def test_report_stage_deps_cover_every_file_it_reads() -> None:
    """Every record the report reads, in params.yaml and every complete profile, is a dep of
    dvc.yaml's ``report`` stage (after interpolation; the extra records through ``metrics``)."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    assert stage["cmd"] == "python -m flows.report"
    files = ["params.yaml", *(f"profiles/{p.name}" for p in sorted(ROOT.glob("profiles/*.yaml")))]
    checked = 0
    for name in files:
        params = yaml.safe_load((ROOT / name).read_text())
        if "report" not in params:
            continue
        group = params["report"]

        def value(match: re.Match[str], params: dict[str, Any] = params) -> str:
            node: Any = params
            for key in match.group(1).split("."):
                node = node[key]
            return str(node)

        deps = [Path(TEMPLATE.sub(value, str(d))) for d in stage["deps"]]
        reads = [group[s]["metrics"] for s in ("heads", "synthesis", "dfid", "sweep", "downstream")]
        reads += [e["metrics"] for e in (*group["downstream_extra"], *group["labellers"])]
        for path in map(Path, reads):
            assert any(path == d or d in path.parents for d in deps), (name, path)
        outs = [TEMPLATE.sub(value, str(next(iter(o)))) for o in stage["outs"]]
        assert outs == [group["out_file"]]
        checked += 1
    assert checked >= 4  # params.yaml and the complete profiles


@pytest.mark.slow
def test_report_flow_writes_the_committed_report(tmp_path: Path) -> None:
    """``python -m flows.report`` (a real Prefect run, its own temporary server) writes the
    committed report's bytes."""
    from tests.prefect_server import prefect_env

    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.report", f"out_file={out}"],
        cwd=ROOT,
        env=prefect_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == (ROOT / "reports/results.md").read_bytes()


def test_missing_record_is_one_error_line_before_prefect(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flows.report", "heads.metrics=metrics/nope.json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: report.heads.metrics='metrics/nope.json': not found (run stage train_heads first)\n"
    )


def test_schema_rules(at_root: Path) -> None:
    d = stage_defaults("report")
    with pytest.raises(ParamError, match=r"report.out_file='metrics/dfid.json': is also"):
        validate(ReportParams, {**d, "out_file": "metrics/dfid.json"})
    with pytest.raises(ParamError, match=r"report.sweep.metrics='metrics/dfid.json': is not a fo"):
        validate(ReportParams, {**d, "sweep": {"metrics": "metrics/dfid.json", "plots": []}})
    with pytest.raises(ParamError, match=r"report.downstream_extra\[0\].metrics='plots/sweep'"):
        extra = [{"title": "x", "metrics": "plots/sweep", "plots": [], "command": None}]
        validate(ReportParams, {**d, "downstream_extra": extra})
    with pytest.raises(DagError, match=r"unknown parameter\(s\) report.heads.metric\b"):
        validate(ReportParams, {**d, "heads": {"metric": "m.json", "plots": []}})


# --- the renderer on small fixed records -----------------------------------------------------


def test_numbers_intervals_and_verdicts() -> None:
    row = {"x_diff": -0.25, "x_diff_ci_lo": -0.5, "x_diff_ci_hi": 0.125, "x_rel_change": -0.05}
    assert difference(row, "x", 2) == "-0.25 [-0.50, +0.12]: no difference"
    assert difference(row, "x", 1, rel=True) == "-0.2 [-0.5, +0.1] (-5.0 %): no difference"
    assert difference({**row, "x_verdict": "lower"}, "x", 2).endswith(": lower")  # as recorded
    assert (verdict(-2, -1), verdict(1, 2), verdict(-1, 1)) == ("lower", "higher", "no difference")
    assert table(["a", "b"], [["1", "2"]], "r") == "| a | b |\n|---:|---|\n| 1 | 2 |\n"


def _metrics(abs_rel: float, count: int = 8) -> dict[str, float]:
    return {"abs_rel": abs_rel, "rmse": 1.0, "delta1": 0.5, "count": count}


def _diff(value: float) -> dict[str, Any]:
    return {
        "abs_rel_diff": value,
        "abs_rel_diff_ci_lo": value - 0.01,
        "abs_rel_diff_ci_hi": value + 0.01,
        "abs_rel_verdict": verdict(value - 0.01, value + 0.01),
        "delta1_diff": -value,
        "delta1_diff_ci_lo": -value - 0.01,
        "delta1_diff_ci_hi": -value + 0.01,
        "delta1_verdict": verdict(-value - 0.01, -value + 0.01),
    }


#: today's downstream record: one split, ``paired`` against one reference
PAIRED = {
    "world": {"labelled": _metrics(0.1), "unguided": _metrics(0.2), "dag": _metrics(0.25)},
    "paired": {
        "reference": "unguided",
        "n_boot": 100,
        "confidence": 0.95,
        "runs": 1,
        "world": {"labelled": _diff(-0.1), "dag": _diff(0.05)},
    },
}
#: the new downstream record: training sets, a ``comparisons`` list, diagnostic and curves
COMPARISONS = {
    "world": {"unguided": _metrics(0.2), "dag": _metrics(0.25)},
    "nyu": {"unguided": _metrics(0.4, 5), "dag": _metrics(0.3, 5)},
    "training_sets": {
        "unguided": {"data": "data/synthetic/unguided", "regime": "alone", "labels": "stored"},
        "dag": {"data": "data/synthetic/dag", "regime": "alone", "labels": "stored", "pairs": 4},
    },
    "runs": 3,
    "n_boot": 200,
    "confidence": 0.95,
    "comparisons": [
        {"split": "world", "set": "dag", "reference": "unguided", **_diff(0.05)},
        {"split": "nyu", "set": "dag", "reference": "unguided", **_diff(-0.1)},
    ],
    "diagnostic": {
        "split": "world",
        "sets": [
            {
                "set": "dag",
                "data": "data/synthetic/dag",
                "labels": "heads",
                "pairs": 4,
                "abs_rel": 0.25,
                "abs_rel_ci_lo": 0.2,
                "abs_rel_ci_hi": 0.3,
                "delta1": 0.5,
                "delta1_ci_lo": 0.4,
                "delta1_ci_hi": 0.6,
            }
        ],
    },
    "curves": {
        "dag": [
            {"n": 2, "abs_rel": 0.3, "abs_rel_ci_lo": 0.25, "abs_rel_ci_hi": 0.35, "delta1": 0.4},
            {"n": 4, "abs_rel": 0.25, "abs_rel_ci_lo": 0.2, "abs_rel_ci_hi": 0.3, "delta1": 0.5},
        ]
    },
}


def test_downstream_splits_and_comparisons_read_both_formats() -> None:
    assert list(downstream_splits(PAIRED)) == ["world"]
    assert list(downstream_splits(COMPARISONS)) == ["world", "nyu"]
    old = downstream_comparisons(PAIRED)
    assert [(r["split"], r["set"], r["reference"]) for r in old] == [
        ("world", "labelled", "unguided"),
        ("world", "dag", "unguided"),
    ]
    assert old[1]["abs_rel_diff"] == 0.05
    assert downstream_comparisons(COMPARISONS) == COMPARISONS["comparisons"]
    assert downstream_comparisons({"world": PAIRED["world"]}) == []


def test_downstream_section_renders_the_parts_present_and_skips_the_rest() -> None:
    old = downstream_section(Record(PAIRED, "m/d.json", ("m/d.md",)), "Downstream")
    assert old.startswith("## Downstream (`m/d.json`)\n\n")
    assert "One training run per set: the CIs cover the test images only." in old
    assert "| world | dag − unguided | +0.050 [+0.040, +0.060]: higher | " in old
    assert "### world (8 test images)\n\n| training set | AbsRel ↓ | RMSE ↓ | δ<1.25 ↑ |\n" in old
    for absent in ("### Training sets", "### Diagnostic", "### AbsRel against", "Measured with"):
        assert absent not in old
    assert old.endswith("\nPlots and tables: `m/d.md`.\n")

    new = downstream_section(Record(COMPARISONS, "m/e.json", (), "big", "python -m x"), "Extra")
    assert "Measured with\n\n```bash\npython -m x\n```" in new
    assert "3 training runs per set, run r of every set with the same seed" in new
    assert "| training set | data | regime | labels | pairs |\n" in new
    assert "| unguided | data/synthetic/unguided | alone | stored | — |\n" in new
    assert "### nyu (5 test images)" in new
    assert "| nyu | dag − unguided | -0.100 [-0.110, -0.090]: lower | " in new
    assert "### Diagnostic (world test split)" in new
    assert (
        "| dag | data/synthetic/dag | heads | 4 | 0.250 [0.200, 0.300] | 0.500 [0.400, 0.600] |"
        in new
    )
    assert "| dag | 2 | 0.300 [0.250, 0.350] | 0.400 |\n| dag | 4 | " in new
    with pytest.raises(DagError, match=r"m/x\.json holds no test split"):
        downstream_section(Record({"paired": PAIRED["paired"]}, "m/x.json"), "D")


HEADS = {
    "t": 0,
    "strong": {"abs_rel": 0.2, "delta1": 0.7},
    "weak": {"abs_rel": 0.25, "delta1": 0.6},
    "mean_depth_baseline": {"abs_rel": 0.4, "delta1": 0.4},
    "n_train": 10,
    "n_heldout": 5,
}


def _dfid_row(n: int = 4) -> dict[str, float]:
    row: dict[str, float] = {"n": n, "kid_mean": 0.01, "kid_std": 0.001}
    row.update({"precision": 0.5, "recall": 0.25, "labels_nonfinite": 0})
    for key, v in (("dfid", 30.0), ("fid", 100.0), ("consistency_abs_rel", 0.15)):
        row.update({key: v, f"{key}_ci_lo": v - 1, f"{key}_ci_hi": v + 1})
    row.update({"consistency_delta1": 0.8, "consistency_delta1_ci_lo": 0.7})
    row["consistency_delta1_ci_hi"] = 0.9
    return row


def _dfid_diff() -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, v in (("dfid", -1.0), ("fid", 2.0), ("consistency_abs_rel", -0.02)):
        row.update({f"{key}_diff": v, f"{key}_diff_ci_lo": v - 0.5, f"{key}_diff_ci_hi": v + 0.5})
        row[f"{key}_verdict"] = verdict(v - 0.5, v + 0.5)
    row.update({"dfid_rel_change": -0.03, "fid_rel_change": 0.02})
    row.update({"consistency_delta1_diff": 0.1, "consistency_delta1_diff_ci_lo": 0.05})
    row.update({"consistency_delta1_diff_ci_hi": 0.15, "consistency_delta1_verdict": "higher"})
    return row


DFID = {
    "extractor": "inception-v3-compat",
    "n_real": 6,
    "n_boot": 50,
    "confidence": 0.95,
    "reference_variant": "unguided",
    "variants": {"unguided": _dfid_row(), "dcg": _dfid_row(), "dag": _dfid_row()},
    "vs_unguided": {"dcg": _dfid_diff(), "dag": _dfid_diff()},
}


def test_headline_follows_one_contrast_and_later_records_replace_earlier_rows() -> None:
    heads, dfid = Record(HEADS, "m/heads.json"), Record(DFID, "m/dfid.json")
    rows = headline_rows(heads, dfid, [Record(PAIRED, "m/d.json"), Record(COMPARISONS, "m/e.json")])
    assert [r[0] for r in rows] == [
        "depth heads: MLP-S held-out AbsRel, t = 0",
        "image–label consistency AbsRel, dag − unguided",
        "dFID, dag − unguided",
        "FID, dag − unguided",
        "downstream depth net AbsRel on world, dag − unguided",
        "downstream depth net AbsRel on nyu, dag − unguided",
    ]
    assert rows[0][1:] == [
        "0.200 (mean-depth baseline 0.400)",
        "5 held-out pairs",
        "`m/heads.json`",
    ]
    assert rows[2][1] == "-1.0 [-1.5, -0.5]: lower"
    assert rows[2][2] == "4 samples per variant, paired; 6 real images"
    # the later record (3 runs) replaces the world row of the earlier one (1 run)
    assert rows[4][2:] == ["8 test images, 3 training runs per set", "`m/e.json`"]
    only_old = headline_rows(heads, dfid, [Record(PAIRED, "m/d.json")])
    assert only_old[-1][1:] == [
        "+0.050 [+0.040, +0.060]: higher",
        "8 test images, 1 training run per set",
        "`m/d.json`",
    ]
    # with a floor, the reference's headroom; without paired differences, the heads alone
    gap = {"dfid_gap": 2.0, "dfid_gap_ci_lo": -1.0, "dfid_gap_ci_hi": 5.0}
    floored = {**DFID, "floor": {**_dfid_row(7), "data": "d/floor"}, "headroom": {"unguided": gap}}
    rows = headline_rows(heads, Record(floored, "m/dfid.json"), [])
    assert rows[-1][:3] == [
        "dFID of unguided above real images (the floor)",
        "+2.0 [-1.0, +5.0]",
        "7 held-out real pairs",
    ]
    assert len(headline_rows(heads, Record({**DFID, "reference_variant": None}, "f"), [])) == 1
    table_text = headline_table(heads, dfid, [])
    assert table_text.splitlines()[:2] == [
        "| result | value [95 % CI]: verdict | measured on | record |",
        "|---|---|---|---|",
    ]


def test_headline_also_carries_the_labelled_plus_synthetic_contrasts() -> None:
    """labelled+dag − labelled and labelled+dag − labelled+unguided join dag − unguided, per
    split, in that order; other comparisons (filters, diagnostics) stay in the report."""
    heads, dfid = Record(HEADS, "m/heads.json"), Record(DFID, "m/dfid.json")
    comparisons = [
        {"split": split, "set": s, "reference": r, **_diff(0.01)}
        for split in ("world", "nyu")
        for s, r in (
            ("labelled+dag", "labelled+unguided"),
            ("labelled+dag-u10", "labelled+dag"),
            ("labelled+dag", "labelled"),
        )
    ]
    later = {**COMPARISONS, "comparisons": comparisons}
    rows = headline_rows(heads, dfid, [Record(COMPARISONS, "m/d.json"), Record(later, "m/e.json")])
    assert [(r[0].split(", ")[-1], r[0].split(" on ")[1].split(",")[0]) for r in rows[4:]] == [
        ("dag − unguided", "world"),
        ("dag − unguided", "nyu"),
        ("labelled+dag − labelled", "world"),
        ("labelled+dag − labelled", "nyu"),
        ("labelled+dag − labelled+unguided", "world"),
        ("labelled+dag − labelled+unguided", "nyu"),
    ]
    assert [r[3] for r in rows[4:]] == ["`m/d.json`"] * 2 + ["`m/e.json`"] * 4


def _sweep_row(w: float, dfid: float, **extra: float) -> dict[str, float]:
    row = {"w": w, "dfid": dfid, "dfid_ci_lo": dfid - 1, "dfid_ci_hi": dfid + 1, "fid": 100.0}
    row.update({"consistency_abs_rel": 0.15})
    for key, v in (("dfid", dfid - 50), ("fid", 0.0), ("consistency_abs_rel", 0.0)):
        lo, hi = (v - 0.5, v + 0.5) if w else (0.0, 0.0)
        row.update(
            {f"{key}_diff": v if w else 0.0, f"{key}_diff_ci_lo": lo, f"{key}_diff_ci_hi": hi}
        )
    row.update(extra)
    return row


def test_sweep_shows_a_shared_unguided_point_once() -> None:
    floor = {"floor_dfid": 45.0, "floor_fid": 90.0, "floor_consistency_abs_rel": 0.12}
    base = _sweep_row(0, 50, **floor)
    shared = {
        "grad-norm": [base, _sweep_row(0.1, 51, **floor)],
        "paper_0-0.6": [base, _sweep_row(1, 60, **floor)],
    }
    text = sweep_section(Record(shared, "plots/sweep", ("plots/sweep.png",)))
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[:2] for line in lines[1:]] == [
        ["| every series", "0"],
        ["| paper_0-0.6", "1"],  # scale-mode series before the named remedies
        ["| grad-norm", "0.1"],
    ]
    assert "| +10.0 [+9.5, +10.5]: higher | +0.0 [-0.5, +0.5]: no difference |" in lines[2]
    assert "score dFID 45.0, FID 90.0 and consistency AbsRel 0.120" in text
    other = {"a_0-1": [base, _sweep_row(1, 60)], "b_0-1": [_sweep_row(0, 52), _sweep_row(1, 61)]}
    lines = [ln for ln in sweep_section(Record(other, "s")).splitlines() if ln.startswith("| ")]
    assert [ln.split(" | ")[0] for ln in lines[1:]] == ["| a_0-1"] * 2 + ["| b_0-1"] * 2


def test_heads_section_and_missing_keys() -> None:
    low = {"resolution": 8, "strong": {"abs_rel": 0.21, "delta1": 0.69}, "weak": HEADS["weak"]}
    text = heads_section(Record({**HEADS, "at_head_resolution": low}, "m/h.json", ("p.csv",)))
    assert "| MLP-S (strong blocks S) | 0.200 | 0.700 |\n" in text
    assert "| MLP-S evaluated at 8² | 0.210 | 0.690 |\n" in text
    assert "on the 5 held-out labelled pairs (the heads were trained on 10)" in text
    with pytest.raises(DagError, match=r"m/h.json lacks n_train, n_heldout"):
        heads_section(
            Record(
                {k: HEADS[k] for k in ("t", "strong", "weak", "mean_depth_baseline")}, "m/h.json"
            )
        )


def test_results_report_assembles_every_section_in_order() -> None:
    sweep = {"paper_0-1": [_sweep_row(0, 50), _sweep_row(1, 55)]}
    synthesis = {"unguided": {"L_dc": 0.01, "L_dp": 0.02, "n": 4}, "dag": {"L_dc": 0.005, "n": 4}}
    synthesis["note"] = {"other": 1.0}  # not a variant: skipped
    text = results_report(
        Record(HEADS, "m/heads.json"),
        Record(synthesis, "m/synthesis.json"),
        Record(DFID, "m/dfid.json"),
        Record(sweep, "plots/sweep"),
        Record(PAIRED, "m/downstream.json"),
        [Record(COMPARISONS, "m/downstream-2k.json", title="2,000 samples")],
    )
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Headline",
        "## Depth heads (`m/heads.json`)",
        "## Guidance losses of the samples (`m/synthesis.json`)",
        "## dFID, FID and image–label consistency (`m/dfid.json`)",
        "## Guidance strength sweep (`plots/sweep`)",
        "## Downstream depth network (`m/downstream.json`)",
        "## Downstream depth network: 2,000 samples (`m/downstream-2k.json`)",
    ]
    assert text.startswith("<!-- generated by `python -m flows.report`")
    assert "| dag | 4 | 0.0050 | — |" in text  # a variant without a prior: no L_dp
    assert (
        "| dag − unguided | -1.0 [-1.5, -0.5] (-3.0 %): lower | +2.0 [+1.5, +2.5] (+2.0 %)" in text
    )
    assert "### Headroom" not in text  # no floor in this record
    assert "| note |" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("name", ["downstream_runs1.json", "downstream_runs2.json"])
def test_the_downstream_stage_own_records_render(name: str) -> None:
    """The records the downstream stage writes today (its golden files, ``tests/test_reports.py``)
    render whole: every split, comparison, diagnostic row and curve point."""
    import json

    data = json.loads((ROOT / "tests/golden" / name).read_text())
    text = downstream_section(Record(data, f"metrics/{name}"), "Downstream")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    splits = downstream_splits(data)
    expected = len(data.get("training_sets", {})) + sum(len(r) for r in splits.values())
    expected += len(data.get("comparisons", []))
    expected += len((data.get("diagnostic") or {}).get("sets", []))
    expected += sum(len(points) for points in (data.get("curves") or {}).values())
    headers = bool(data.get("training_sets")) + len(splits) + bool(data.get("comparisons"))
    headers += bool((data.get("diagnostic") or {}).get("sets")) + bool(data.get("curves"))
    assert len(rows) == expected + headers
    assert downstream_comparisons(data) == data["comparisons"]
    heads, dfid = Record(HEADS, "m/heads.json"), Record(DFID, "m/dfid.json")
    picked = headline_rows(heads, dfid, [Record(data, "m/d.json")])[4:]
    contrasts = [("dag", "unguided"), ("labelled+dag", "labelled")]
    contrasts.append(("labelled+dag", "labelled+unguided"))
    assert [r[0] for r in picked] == [
        f"downstream depth net AbsRel on {row['split']}, {s} − {r}"
        for s, r in contrasts
        for row in data["comparisons"]
        if (row["set"], row["reference"]) == (s, r)
    ]
