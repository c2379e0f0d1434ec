"""The real ``dvc repro`` of every stage on the smoke profile, against a real Prefect server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dag_core.shards import ShardDataset, verify_dataset
from tests.prefect_server import prefect_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _clone(dst: Path, nyu: Path) -> Path:
    """The project's source files (tracked + new, not ignored) in a fresh git repo at ``dst``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in listed:
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    params = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    params["downstream"]["nyu_path"] = str(nyu)  # the 50 real NYU pairs, read in place
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def test_dvc_repro_smoke_profile(tmp_path: Path, api: str, nyu_test50_dir: Path) -> None:
    project = _clone(tmp_path / "project", nyu_test50_dir)
    env = prefect_env(tmp_path / "home", api)
    dvc = [sys.executable, "-m", "dvc"]
    run = subprocess.run([*dvc, "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    heads = json.loads((project / "metrics/heads.json").read_text())
    assert heads["strong"]["abs_rel"] > 0 and heads["mean_depth_baseline"]["abs_rel"] > 0
    labellers = json.loads((project / "metrics/labellers.json").read_text())
    assert list(labellers["labellers"]) == ["heads", "heads-tta", "scratch", "fit-s"]
    assert labellers["runs"] == 2 and labellers["labellers"]["scratch"]["runs"] == 2
    assert [(r["labeller"], r["n"]) for r in labellers["ceiling"]] == [("fit-s", 4), ("scratch", 4)]
    times = json.loads((project / "metrics/labellers.times.json").read_text())
    assert set(times) == {"heads", "heads-tta", "scratch", "fit-s", "fit-s@4", "scratch@4"}
    assert "| fit-s | fit |" in (project / "metrics/labellers.md").read_text()
    assert not list((project / "metrics").glob(".*.resume"))  # the record is out: no resume left
    synth = json.loads((project / "metrics/synthesis.json").read_text())
    assert set(synth) == {"unguided", "dag"} and synth["dag"]["L_dc"] >= 0
    dfid = json.loads((project / "metrics/dfid.json").read_text())
    assert dfid["extractor"] and set(dfid["variants"]) == {"unguided", "dag"}
    for row in dfid["variants"].values():
        assert row["dfid"] >= 0 and row["fid"] >= 0 and row["n"] == 4
        assert row["dfid_ci_lo"] <= row["dfid"] <= row["dfid_ci_hi"]
        assert row["consistency_abs_rel"] >= 0 and 0 <= row["consistency_delta1"] <= 1
    diff = dfid["vs_unguided"]["dag"]
    assert diff["dfid_verdict"] in {"lower", "higher", "no difference"}
    assert diff["consistency_abs_rel_diff_ci_lo"] <= diff["consistency_abs_rel_diff_ci_hi"]
    rows_w0_dfid = None
    for mode in ("paper", "mean"):
        rows = (project / f"plots/sweep/{mode}_0-1.csv").read_text().splitlines()
        rows_w0_dfid = rows[1].split(",")[1]
        assert rows[0].startswith("w,dfid,dfid_ci_lo,dfid_ci_hi,fid")
        assert [r.split(",")[0] for r in rows[1:]] == ["0.0", "40.0"]
    for remedy, w in (("grad-norm", "0.1"), ("dpg-sds", "40.0")):
        rows = (project / f"plots/sweep/{remedy}.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["0.0", w]
        assert rows[1].split(",")[1] == rows_w0_dfid  # w = 0 is the shared unguided point
    assert (project / "plots/sweep.png").stat().st_size > 1000
    down = json.loads((project / "metrics/downstream.json").read_text())
    sets = {
        "labelled",
        "unguided",
        "dag",
        "labelled+unguided",
        "labelled+dag",
        "labelled+dag-mix",
        "dag-reflabels",
        "real-headlabels",
        "real-exact",
        "labelled+dag@2",
    }  # every regime, label source, subset and curve point of the smoke profile
    assert set(down["world"]) == set(down["nyu"]) == set(down["training_sets"]) == sets
    assert all(0 < r["abs_rel"] < 10 for r in down["nyu"].values())
    assert down["training_sets"]["labelled+dag-mix"]["regime"] == "mix"
    assert down["training_sets"]["real-headlabels"] == {
        "data": "data/reference/train",
        "regime": "alone",
        "labels": "heads",
        "pairs": 4,
        "limit": 4,
        "drop_uncertain": 0.0,
    }
    pairs = {(r["split"], r["set"], r["reference"]): r for r in down["comparisons"]}
    assert len(pairs) == 10 and ("nyu", "dag", "unguided") in pairs  # 5 comparisons, 2 splits
    row = pairs[("world", "dag", "unguided")]
    assert row["abs_rel_diff_ci_lo"] <= row["abs_rel_diff"] <= row["abs_rel_diff_ci_hi"]
    assert row["abs_rel_diff"] == pytest.approx(
        down["world"]["dag"]["abs_rel"] - down["world"]["unguided"]["abs_rel"]
    )
    assert [r["set"] for r in down["diagnostic"]["sets"]] == [
        "dag",
        "dag-reflabels",
        "real-headlabels",
        "real-exact",
    ]
    assert [r["n"] for r in down["curves"]["labelled+dag"]] == [2, 4]
    assert (project / "plots/downstream_vs_n/labelled+dag.csv").read_text().startswith("n,abs_rel")
    assert "2 training runs per set" in (project / "metrics/downstream.md").read_text()
    assert down["runs"] == 2 and down["world"]["dag"]["runs"] == 2
    assert down["world"]["dag"]["abs_rel_run_sd"] >= 0
    kept = json.loads((project / "models/downstream/dag/seed-0/depth_net.json").read_text())
    assert kept["training"]["kept"]["step"] in (2, 3)  # validation every 2 of 3 steps
    nets = [project / f"models/downstream/dag/seed-{s}/depth_net.safetensors" for s in (0, 1)]
    assert nets[0].read_bytes() != nets[1].read_bytes()  # two training runs, two seeds
    out = run.stdout + run.stderr  # finetune nets continue the alone runs of their pairs
    for name in ("labelled+unguided", "labelled+dag"):
        assert f"{name}: depth net: steps 1-2 from the alone run's state" in out, name
    for name in ("labelled+dag@2", "labelled+dag-mix"):  # no alone run of the same pairs
        assert f"{name}: depth net: steps 1-2" not in out, name
    assert not (project / "models/downstream/_branch").exists()
    assert not (project / "models/.downstream.resume").exists()  # gone once the nets are in place
    # the reference stage stored the real test split's features; dfid and sweep read them
    assert (project / "models/reference_depth/real_features.npz").is_file()
    stored = "real set data/reference/test: features read from the estimator's folder"
    assert out.count(stored) == 2, out.count(stored)
    assert (project / "reports/synthesis/samples.png").stat().st_size > 1000
    assert (project / "plots/probe/probes.png").is_file()
    report = (project / "reports/results.md").read_text()  # stage report, from this run's metrics
    assert report.startswith("<!-- generated by `python -m flows.report`")
    assert "| dFID, dag − unguided |" in report and "## Downstream depth network (`" in report
    for variant in ("unguided", "dag"):
        rows = verify_dataset(project / "data/synthetic" / variant)["total_rows"]
        assert rows == len(ShardDataset(project / "data/synthetic" / variant)) == 4

    again = subprocess.run([*dvc, "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert again.returncode == 0
    assert "up to date" in again.stdout  # DVC owns caching: nothing reruns
    status = subprocess.run(
        [*dvc, "status"], cwd=project, env=env, capture_output=True, text=True, check=True
    )
    assert "up to date" in status.stdout
