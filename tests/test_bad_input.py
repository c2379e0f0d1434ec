"""Bad input across the stage CLIs: one ``error:`` line, exit 2, nothing already written lost.

Real stage processes against a real Prefect server and real finished datasets: every file of the
project folder is hashed before and after each bad run and must be byte-for-byte unchanged, with
no file added. Also: a damaged or incomplete dataset is never read as whole by a stage, resume
re-renders exactly the shards whose content does not verify, and SIGTERM stops the ephemeral
Prefect server of a run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml
from PIL import Image

from dag_core.shards import MANIFEST_NAME, verify_dataset
from tests.prefect_server import prefect_env
from tests.tiny_models import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _stage(
    stage: str, params: Path, env: dict[str, str], *overrides: str
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", f"flows.{stage}", "--params", str(params), *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, api: str) -> dict[str, Any]:
    """Tiny models, a finished synthetic dataset and labelled subset, a damaged and an
    incomplete copy of the synthetic set, 8-bit-looking depth PNGs, and their params."""
    tmp = tmp_path_factory.mktemp("bad-input")
    proj = tmp / "proj"
    models = write_tiny_models(proj / "models")
    env = prefect_env(tmp / "home", api)
    synth = {
        **models,
        "out_dir": str(proj / "data/synthetic"),
        "num_samples": 2,
        "batch_size": 2,
        "shard_size": 1,
        "seed": 3,
        "sampler": "ddim",
        "steps": 2,
        "guidance": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100},
        "variants": {"unguided": {"w_dc": 0.0, "w_dp": 0.0}, "dag": {}},
        "metrics_file": str(proj / "metrics/synthesis.json"),
        "report_dir": None,
    }
    labelled = {
        "source": "world",
        "n": 3,
        "n_heldout": 1,
        "resolution": 16,
        "out_dir": str(proj / "data/labelled"),
    }
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": synth, "label_subset": labelled}))
    for stage in ("synthesize", "label_subset"):
        run = _stage(stage, params, env)
        assert run.returncode == 0, run.stderr[-3000:]
    good = proj / "data/synthetic/dag"
    shutil.copytree(good, proj / "data/damaged/dag")
    _flip_middle_byte(proj / "data/damaged/dag/part-00001.parquet")
    shutil.copytree(good, proj / "data/incomplete/dag")
    (proj / "data/incomplete/dag/part-00000.parquet").unlink()
    images, depths = proj / "data/folder/images", proj / "data/folder/depth"
    images.mkdir(parents=True)
    depths.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(images / f"{i}.png")
        Image.fromarray(np.full((8, 8), 200, np.uint16)).save(depths / f"{i}.png")
    (proj / "a-file").write_text("not a folder\n")
    from dag_core.depthnorm import DepthNorm
    from dag_core.downstream import DepthNet, DownstreamConfig, save_depth_net

    config = DownstreamConfig(resolution=16, channels=(8, 16))  # a (random) dFID estimator
    save_depth_net(DepthNet(config.channels), config, DepthNorm(), proj / "models/estimator")
    return {"proj": proj, "params": params, "env": env, "synth": synth, "labelled": labelled}


def _cases(p: Path) -> list[tuple[str, dict[str, Any] | None, list[str], str]]:
    """(stage, params-file groups or None for the project's file, overrides, text in error)."""
    d, junk = p / "data", p.parent / "junk"  # outputs a wrongly started run would write
    good_downstream = {
        "downstream": {
            "train_sets": {
                "unguided": str(d / "synthetic/unguided"),
                "dag": str(d / "synthetic/dag"),
            },
            "world_test": str(d / "synthetic/dag"),
            "models_dir": str(junk / "m"),
            "metrics_file": str(junk / "m.json"),
            "table_file": str(junk / "m.md"),
        }
    }
    return [
        ("synthesize", None, ["sampler=euler"], "euler"),
        ("synthesize", None, ["steps=0"], "steps"),
        ("synthesize", None, ["steps=5000"], "5000"),  # beyond the base model's T
        ("synthesize", None, ["eta=-0.5"], "eta"),
        ("synthesize", None, ["sampler=ddpm", "eta=0.5"], "eta"),
        ("synthesize", None, ["depth_dtype=uint8"], "uint8"),
        ("synthesize", None, ["seed=-1"], "seed"),
        ("synthesize", None, ["num_samples=abc"], "num_samples"),
        ("synthesize", None, ["num_samples=true"], "num_samples"),
        ("synthesize", None, ["batch_size=0"], "batch_size"),
        ("synthesize", None, ["variants={../evil: {}}"], "../evil"),
        ("synthesize", None, ["guidance={w_dc: -1.0}"], "-1.0"),
        ("synthesize", None, ["guidance={tau: 5000}"], "5000"),  # beyond the prior's T
        ("synthesize", None, ["task_runner={kind: spark}"], "spark"),
        ("synthesize", None, ["task_runner={n_workrs: 2}"], "n_workrs"),
        ("synthesize", None, [f"out_dir={p / 'a-file'}/synthetic"], "a-file"),
        ("synthesize", None, [f"metrics_file={d}"], str(d)),
        ("synthesize", None, [f"heads={p / 'no-heads'}"], "no-heads"),
        ("synthesize", None, ["num_sample=3"], "num_sample"),
        ("synthesize", None, ["oops"], "oops"),
        ("synthesize", {"synthesise": {"num_samples": 2}}, [], "synthesise"),
        ("synthesize", {"label_subset": {"n": 2}}, [], "synthesize"),
        ("label_subset", None, ["source=lsun"], "lsun"),
        ("label_subset", None, ["depth_dtype=uint8"], "uint8"),
        ("label_subset", None, ["n=-3"], "-3"),
        ("label_subset", None, ["n=1.5"], "1.5"),
        (
            "label_subset",
            None,
            ["source=folder", f"path={d / 'folder/images'}", f"depth_dir={d / 'folder/depth'}"],
            "8-bit",
        ),
        ("downstream", good_downstream, ["paired_reference=nope"], "nope"),
        ("downstream", good_downstream, ["n_boot=3"], "n_boot"),
        ("downstream", good_downstream, ["runs=0"], "runs"),
        ("downstream", good_downstream, ["config={seed: x}"], "'x'"),
        (
            "downstream",
            {
                "downstream": {
                    "train_sets": {"x": str(d / "damaged/dag")},
                    "paired_reference": None,
                    "models_dir": str(junk / "m"),
                    "metrics_file": str(junk / "m.json"),
                    "table_file": str(junk / "m.md"),
                }
            },
            [],
            "part-00001",
        ),
        (
            "dfid",
            {
                "dfid": {
                    "synthetic": str(d / "incomplete"),
                    "variants": ["dag"],
                    "reference_variant": None,
                    "metrics_file": str(junk / "d.json"),
                }
            },
            [],
            "part-00000",
        ),
        (
            "dfid",
            {
                "dfid": {
                    "synthetic": str(d / "synthetic"),
                    "variants": ["unguided", "dag"],
                    "real": str(d / "synthetic/dag"),
                    "estimator": str(p / "models/estimator"),
                    "floor": str(d / "labelled/heldout"),  # 1 pair for 2 samples per variant
                    "metrics_file": str(junk / "d.json"),
                }
            },
            [],
            "has 1 images, fewer than the 2",
        ),
        ("reference", {"reference": {"n_floor": -4, "data_dir": str(junk / "r")}}, [], "n_floor"),
        (
            "train_prior",
            {
                "train_prior": {
                    "labelled": str(d / "incomplete"),
                    "heads": str(p / "models/heads"),
                    "out_dir": str(junk / "p"),
                }
            },
            [],
            "part-00000",
        ),
    ]


# One real process runs every case through the stages' own entry point (``run_stage``, exactly
# what ``python -m flows.<stage>`` calls), with stderr captured at the file-descriptor level per
# case: the cases cost seconds, not the half minute of a cold torch + Prefect start each.
DRIVER = """
import importlib, json, os, sys, tempfile
cases = json.load(open(sys.argv[1]))
results = []
for stage, params, overrides in cases:
    fn = getattr(importlib.import_module(f"flows.{stage}"), stage)
    from flows._cli import run_stage
    from flows.schema.stages import SCHEMAS
    with tempfile.TemporaryFile("w+") as err:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            run_stage(fn, SCHEMAS[stage], ["--params", params, *overrides])
            code = 0
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        results.append([code, err.read()])
json.dump(results, open(sys.argv[2], "w"))
"""


def test_bad_inputs_end_in_one_error_line_and_lose_nothing(project: dict[str, Any]) -> None:
    proj, env, tmp = project["proj"], project["env"], project["proj"].parent
    before = _snapshot(proj)
    assert any(k.startswith("data/synthetic/dag/part-") for k in before)
    assert any(k.startswith("data/labelled/train/part-") for k in before)
    cases = _cases(proj)
    assert len(cases) >= 25
    runs = []
    for i, (stage, groups, overrides, _) in enumerate(cases):
        params = project["params"]
        if groups is not None:
            params = tmp / f"case-{i}.yaml"
            params.write_text(yaml.safe_dump(groups))
        runs.append([stage, str(params), overrides])
    (tmp / "cases.json").write_text(json.dumps(runs))
    cmd = [sys.executable, "-c", DRIVER, str(tmp / "cases.json"), str(tmp / "results.json")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp / "results.json").read_text())
    failures = []
    for (stage, _, overrides, needle), (code, stderr) in zip(cases, results, strict=True):
        errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
        if not (code == 2 and len(errors) == 1 and needle in errors[0]) or "Traceback" in stderr:
            failures.append(f"{stage} {overrides}: exit {code}\n{stderr[-800:]}")
    assert not failures, "\n\n".join(failures)
    assert _snapshot(proj) == before  # byte for byte, and no file added
    assert not (tmp / "junk").exists()
    # the same in a stage process of its own
    run = _stage("synthesize", project["params"], env, "sampler=euler")
    assert run.returncode == 2 and run.stderr.count("error: ") == 1 and "euler" in run.stderr
    assert _snapshot(proj) == before


def test_debug_switch_shows_the_traceback(project: dict[str, Any]) -> None:
    env = {**project["env"], "DAG_DEBUG": "1"}
    run = _stage("synthesize", project["params"], env, "sampler=euler")
    assert run.returncode == 2 and "Traceback" in run.stderr
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")] == [
        "error: synthesize.sampler='euler': expected one of 'ddpm', 'ddim'"
    ]


def test_resume_rerenders_damaged_shard_and_restores_the_bytes(project: dict[str, Any]) -> None:
    proj = project["proj"]
    good = proj / "data/synthetic/dag"
    copy = proj.parent / "resume"
    shutil.copytree(proj / "data/synthetic", copy)
    _flip_middle_byte(copy / "dag/part-00001.parquet")
    (copy / "unguided/part-00000.parquet").unlink()
    params = proj.parent / "resume.yaml"
    metrics = str(proj.parent / "resume-metrics.json")
    params.write_text(
        yaml.safe_dump(
            {"synthesize": {**project["synth"], "out_dir": str(copy), "metrics_file": metrics}}
        )
    )
    run = _stage("synthesize", params, project["env"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert "1/2 shards done, 1 to render" in run.stderr + run.stdout
    for variant in ("dag", "unguided"):
        verify_dataset(copy / variant)
        assert _snapshot(copy / variant) == _snapshot(proj / "data/synthetic" / variant)
    assert (good / MANIFEST_NAME).is_file()


def test_sigterm_stops_the_ephemeral_prefect_server(
    project: dict[str, Any], tmp_path: Path
) -> None:
    env = prefect_env(tmp_path / "home")  # no PREFECT_API_URL: Prefect starts its own server
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"  # a busy 2-core box
    params = tmp_path / "params.yaml"
    group = {**project["synth"], "out_dir": str(tmp_path / "out"), "num_samples": 64, "steps": 50}
    params.write_text(yaml.safe_dump({"synthesize": group}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "Beginning flow run" in line:
                break
        else:
            pytest.fail("".join(lines)[-3000:])
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "expected Prefect's ephemeral server as a child process"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, rest[-2000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [c.pid for c in alive]
    assert not (tmp_path / "out" / "dag" / MANIFEST_NAME).exists()
