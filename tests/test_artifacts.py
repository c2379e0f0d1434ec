"""Prefect artifacts of real stage runs, read back from a real Prefect server with its client;
the stages' default logs hold no warning (no library notice such as diffusers' `accelerate`
one) and show progress bars."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prefect_server import prefect_env
from tests.tiny_models import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: what a library warning or notice looks like in a log (Python warnings, logging WARNING
#: lines, diffusers' "pip install accelerate" block)
WARNING = re.compile(r"warn|accelerate|deprecat", re.IGNORECASE)


def _run(stage: str, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", f"flows.{stage}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _artifacts(api: str, flow_name: str) -> dict[str, list[Any]]:
    """Key → the artifacts (oldest first) of the latest run of ``flow_name``, from the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowFilter,
        FlowFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    by_key: dict[str, list[Any]] = {}
    for artifact in sorted(found, key=lambda a: a.created):
        assert artifact.flow_run_id == run.id
        by_key.setdefault(artifact.key, []).append(artifact)
    return by_key


def _table(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def _quiet(out: str) -> None:
    """No line of the log looks like a warning or a library notice."""
    noisy = [line for line in out.splitlines() if WARNING.search(line)]
    assert not noisy, noisy


def test_report_run_has_summary_headline_table_and_links(tmp_path: Path, api: str) -> None:
    env = prefect_env(tmp_path / "home", api)
    out_file, headline = tmp_path / "results.md", tmp_path / "headline.json"
    log = _run("report", env, f"out_file={out_file}", f"headline_file={headline}")
    _quiet(log)
    assert out_file.read_bytes() == (ROOT / "reports/results.md").read_bytes()
    assert headline.read_bytes() == (ROOT / "headline.json").read_bytes()
    arts = _artifacts(api, "report")
    assert set(arts) == {"report-summary", "report-headline", "report-results", "report-samples"}
    (md,) = arts["report-summary"]
    assert md.type == "markdown" and f"`{out_file}`" in md.data and f"`{headline}`" in md.data
    values = json.loads(headline.read_text())
    assert f"| dfid_lo | {values['dfid_lo']:.3f} |" in md.data
    (tab,) = arts["report-headline"]
    assert tab.type == "table" and _table(tab) == [values]
    (link,) = arts["report-results"]
    assert link.type == "markdown" or link.type == "link"
    assert out_file.resolve().as_uri() in link.data
    samples = (ROOT / "reports/synthesis/samples.png").resolve().as_uri()
    assert samples in arts["report-samples"][0].data


def test_synthesis_run_has_shard_progress_summary_and_sample_link(tmp_path: Path, api: str) -> None:
    models = write_tiny_models(tmp_path / "models")
    out = tmp_path / "synthetic"
    group = {
        **models,
        "out_dir": str(out),
        "num_samples": 6,
        "batch_size": 2,
        "shard_size": 2,
        "seed": 3,
        "sampler": "ddim",
        "steps": 2,
        "guidance": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100},
        "variants": {"unguided": {"w_dc": 0.0, "w_dp": 0.0}, "dag": {}},
        "metrics_file": str(tmp_path / "synthesis.json"),
        "report_dir": str(tmp_path / "report"),
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": group}))
    env = prefect_env(tmp_path / "home", api)
    log = _run("synthesize", env, "--params", str(params))
    _quiet(log)  # the base model, heads and prior loads print no notice
    assert re.search(r"shards written: 100%\|[^|]*\| 6/6 \[", log), log[-3000:]
    arts = _artifacts(api, "synthesize-dataset")
    (progress,) = arts["synthesize-shards"]  # one artifact, updated in place
    assert progress.type == "progress" and float(progress.data) == 100.0
    assert progress.description == "shards written: 6/6"
    (md,) = arts["synthesize-summary"]
    metrics = json.loads((tmp_path / "synthesis.json").read_text())
    for variant in ("unguided", "dag"):
        assert f"- `{out}/{variant}`" in md.data
        assert f"| {variant}: samples, L_dc, L_dp | 6, {metrics[variant]['L_dc']:.4f}," in md.data
    (link,) = arts["synthesize-samples"]
    assert (tmp_path / "report/samples.png").resolve().as_uri() in link.data


def test_heads_run_has_step_progress_and_metric_table(tmp_path: Path, api: str) -> None:
    models = write_tiny_models(tmp_path / "models")
    env = prefect_env(tmp_path / "home", api)
    labelled = tmp_path / "labelled"
    base = f"base_model={models['base_model']}"
    _quiet(_run("label_subset", env, base, "n=4", "n_heldout=2", f"out_dir={labelled}"))
    written = _artifacts(api, "label-subset")["label-subset-summary"][0].data
    assert f"- `{labelled}/train`" in written and f"- `{labelled}/heldout`" in written
    metrics = tmp_path / "heads.json"
    log = _run(
        "train_heads",
        env,
        base,
        f"labelled={labelled}",
        f"out_dir={tmp_path / 'heads'}",
        "config.steps=40",
        "config.hidden=[8]",
        "config.batch_size=2",
        "config.pixels_per_image=64",
        "eval_t=[0]",
        f"metrics_file={metrics}",
        f"plots_file={tmp_path / 'heads_vs_t.csv'}",
    )
    _quiet(log)
    assert re.search(r"heads training steps: 100%\|[^|]*\| 40/40 \[", log), log[-3000:]
    arts = _artifacts(api, "train-heads")
    steps = arts["train-heads-steps"]
    assert len(steps) == 1 and float(steps[0].data) == 100.0
    assert steps[0].description == "heads training steps: 40/40"
    m = json.loads(metrics.read_text())
    rows = {row["head"]: row for row in _table(arts["train-heads-metrics"][0])}
    assert set(rows) == {"strong", "weak", "mean_depth_baseline"}
    assert rows["strong"]["abs_rel"] == round(m["strong"]["abs_rel"], 4)
    md = arts["train-heads-summary"][0].data
    assert f"| MLP-S held-out AbsRel, t = 0 | {m['strong']['abs_rel']:.3f} |" in md
