"""Bad input, damaged data, OS errors and signals across the stage CLIs: one ``error:`` line.

Real stage processes against a real Prefect server and real finished datasets: every file of the
project folder is hashed before and after each bad run and must be byte-for-byte unchanged, with
no file added. The classes covered:

* bad values, names and params files (exit 2), and for every stage an input missing — the one
  its checks reach LAST, so everything before it was fine — before anything is written;
* damaged and incomplete datasets (never read as whole; resume re-renders exactly the shards
  whose content does not verify; ``python -m dag_core.shards verify`` names an unfinished
  variant);
* a hub model that is neither cached nor reachable (one line at once, no retries) and one that
  is cached while the hub is unreachable (loaded offline);
* OS errors: a file-size limit while the report is written (the earlier report survives, the
  line names the file), while each stage that writes weights saves them (safetensors, also
  through diffusers: the line names the final weights file, never a temporary name) and while
  the run's Prefect server writes its database (exit 1);
* signals: Ctrl-C to the process group stops synthesis in seconds with one line and exit 130,
  SIGTERM to the process stops a training stage with exit 143, ``kill -9`` leaves no Prefect
  server behind, and the rerun resumes to the bytes of an uninterrupted run; the temporary
  folder and file a ``kill -9`` leaves are removed by the next run of the same writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
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
from tests.prefect_server import free_port, prefect_env
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


def _cut_short(path: Path) -> None:
    """Truncate a file to half its length (a copy interrupted mid-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_bad_files(root: Path, heads: Path | None = None) -> dict[str, Path]:
    """The damaged inputs the params checks catch from headers and metadata alone: a VAE folder
    (a diffusers ``AutoencoderKL`` config) where a base model goes, depth heads whose safetensors
    file is cut short (a copy of ``heads``, or a hand-written one), a ``folder`` label source
    whose depth maps are 8-bit PNGs, and a metrics JSON cut short."""
    vae = root / "models/vae"
    vae.mkdir(parents=True)
    vae_config = {"_class_name": "AutoencoderKL", "sample_size": 8, "latent_channels": 4}
    (vae / "config.json").write_text(json.dumps(vae_config))
    cut = root / "models/heads-cut"
    if heads is not None:
        shutil.copytree(heads, cut)
    else:
        cut.mkdir(parents=True)
        (cut / "heads.json").write_text(json.dumps({"num_train_timesteps": 1000}))
        header = json.dumps({"w": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}})
        raw = header.encode()
        (cut / "heads.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(256))
    _cut_short(cut / "heads.safetensors")
    images, depth8 = root / "data/folder8/images", root / "data/folder8/depth"
    images.mkdir(parents=True)
    depth8.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(images / f"{i}.png")
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(depth8 / f"{i}.png")  # mode L
    bad_json = root / "metrics/cut.json"
    bad_json.parent.mkdir(parents=True, exist_ok=True)
    bad_json.write_text('{"test": {"abs_rel": 0.1')
    return {"vae": vae, "heads_cut": cut, "images8": images, "depth8": depth8, "json": bad_json}


def _file_cases(
    bad: dict[str, Path], unet: Path, junk: Path
) -> list[tuple[str, dict[str, Any], str]]:
    """(stage, its params groups, text in error) of each damaged file :func:`write_bad_files`
    makes, plus a report citing a plot that does not exist (other values: params.yaml's)."""
    synth = {"out_dir": str(junk / "s"), "metrics_file": None, "report_dir": None}
    report = {"out_file": str(junk / "results.md")}
    return [
        (
            "synthesize",
            {"synthesize": {**synth, "base_model": str(bad["vae"])}},
            f"synthesize.base_model='{bad['vae']}': holds a AutoencoderKL; only pixel-space",
        ),
        (
            "synthesize",
            {"synthesize": {**synth, "base_model": str(unet), "heads": str(bad["heads_cut"])}},
            f"synthesize.heads='{bad['heads_cut']}': corrupt weights: "
            f"{bad['heads_cut'] / 'heads.safetensors'} is cut short",
        ),
        (
            "label_subset",
            {
                "label_subset": {
                    "source": "folder",
                    "path": str(bad["images8"]),
                    "depth_dir": str(bad["depth8"]),
                    "resolution": 8,
                    "out_dir": str(junk / "l"),
                }
            },
            f"label_subset.depth_dir='{bad['depth8']}': {bad['depth8'] / '0.png'} is 8-bit",
        ),
        (
            "report",
            {"report": {**report, "heads": {"metrics": str(bad["json"]), "plots": []}}},
            f"report.heads.metrics='{bad['json']}': is not valid JSON",
        ),
        (
            "report",
            {
                "report": {
                    **report,
                    "synthesis": {
                        "metrics": "metrics/synthesis.json",
                        "plots": ["plots/nosuch.png"],
                    },
                }
            },
            "report.synthesis.plots[0]='plots/nosuch.png': not found",
        ),
    ]


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
    write_bad_files(proj, proj / "models/heads")
    (proj / "a-file").write_text("not a folder\n")
    shutil.copytree(proj / "data/labelled/train", proj / "data/train-only/train")
    from dag_core.depthnorm import DepthNorm
    from dag_core.downstream import DepthNet, DownstreamConfig, save_depth_net

    config = DownstreamConfig(resolution=16, channels=(8, 16))  # a (random) dFID estimator
    save_depth_net(DepthNet(config.channels), config, DepthNorm(), proj / "models/estimator")
    for name in ("unguided", "dag"):  # the nets of an earlier downstream run
        save_depth_net(DepthNet(config.channels), config, DepthNorm(), proj / "nets" / name)
    return {"proj": proj, "params": params, "env": env, "synth": synth, "labelled": labelled}


def _good_downstream(d: Path, junk: Path) -> dict[str, Any]:
    """A valid small downstream group on the finished project's synthetic sets."""
    return {
        "train_sets": {
            "unguided": str(d / "synthetic/unguided"),
            "dag": str(d / "synthetic/dag"),
        },
        "world_test": str(d / "synthetic/dag"),
        "labelled": None,
        "validation": None,
        "comparisons": [["dag", "unguided"]],
        "curve": None,
        "models_dir": str(junk / "m"),
        "metrics_file": str(junk / "m.json"),
        "table_file": str(junk / "m.md"),
        "curve_dir": str(junk / "c"),
    }


def _cases(p: Path) -> list[tuple[str, dict[str, Any] | None, list[str], str]]:
    """(stage, params-file groups or None for the project's file, overrides, text in error)."""
    d, junk = p / "data", p.parent / "junk"  # outputs a wrongly started run would write
    good_downstream = {"downstream": _good_downstream(d, junk)}
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
        ("label_subset", None, ["license=MIT License"], "MIT License"),  # not a Hub licence id
        ("label_subset", None, ["n=-3"], "-3"),
        ("label_subset", None, ["n=1.5"], "1.5"),
        (
            "label_subset",
            None,
            ["source=folder", f"path={d / 'folder/images'}", f"depth_dir={d / 'folder/depth'}"],
            "8-bit",
        ),
        *(
            (stage, groups, [], needle)
            for stage, groups, needle in _file_cases(_bad(p), p / "models/base", junk)
        ),
        (
            "sweep",
            {"sweep": {"scales": {"paper": [-1.0]}, "out_dir": str(junk / "sw")}},
            [],
            "sweep.scales.paper[0]=-1.0: must be >= 0",
        ),
        ("downstream", good_downstream, ["comparisons=[[dag, nope]]"], "nope"),
        (
            "downstream",
            good_downstream,
            [f"train_sets={{x: {{data: {d}/synthetic/dag, regime: pretrain}}}}", "comparisons=[]"],
            "pretrain",
        ),
        ("downstream", good_downstream, ["config.steps=2"], "config.steps"),
        ("downstream", good_downstream, ["n_boot=3"], "n_boot"),
        ("downstream", good_downstream, ["runs=0"], "runs"),
        ("downstream", good_downstream, ["config={seed: x}"], "'x'"),
        (
            "downstream",
            {
                "downstream": {
                    "train_sets": {"x": str(d / "damaged/dag")},
                    "labelled": None,
                    "validation": None,
                    "comparisons": [],
                    "curve": None,
                    "models_dir": str(junk / "m"),
                    "metrics_file": str(junk / "m.json"),
                    "table_file": str(junk / "m.md"),
                    "curve_dir": str(junk / "c"),
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
        *_missing_last(p),
    ]


def _bad(p: Path) -> dict[str, Path]:
    """Where the project fixture's :func:`write_bad_files` put the damaged inputs."""
    return {
        "vae": p / "models/vae",
        "heads_cut": p / "models/heads-cut",
        "images8": p / "data/folder8/images",
        "depth8": p / "data/folder8/depth",
        "json": p / "metrics/cut.json",
    }


def _missing_last(p: Path) -> list[tuple[str, dict[str, Any] | None, list[str], str]]:
    """One case per stage with inputs: every input there and whole except the one the stage's
    checks reach last, so a stage that wrote anything before checking it would be caught
    (``reference`` reads no input). Downstream: a third training set listed after two good
    ones, with the nets of an earlier run in ``models_dir``."""
    d, junk, m = p / "data", p.parent / "junk", p / "models"
    base, heads, prior = str(m / "base"), str(m / "heads"), str(m / "prior")
    small_heads = {"hidden": [16], "time_dim": 8, "steps": 2, "batch_size": 2}
    common = {"runtime": {"device": "cpu"}}
    good = _good_downstream(d, junk)
    groups: list[tuple[str, dict[str, Any], str]] = [
        ("base_model", {"pretrained": str(p / "no-model"), "out_dir": str(junk / "b")}, "no-model"),
        (
            "label_subset",
            {
                "source": "folder",
                "path": str(d / "folder/images"),
                "depth_dir": str(d / "no-depth"),
                "resolution": 8,
                "out_dir": str(junk / "l"),
            },
            "no-depth",
        ),
        (
            "train_heads",
            {
                "base_model": base,
                "labelled": str(d / "train-only"),
                "out_dir": str(junk / "h"),
                "config": small_heads,
                "eval_t": [0],
                "metrics_file": str(junk / "h.json"),
                "plots_file": str(junk / "h.csv"),
            },
            "has no 'heldout' dataset",
        ),
        (
            "probe_heads",
            {
                "base_model": base,
                "labelled": str(d / "labelled"),
                "heads": str(p / "no-heads"),
                "ns": [2],
                "config": small_heads,
                "eval_t": [0],
                "out_dir": str(junk / "probe"),
            },
            "no-heads",
        ),
        (
            "train_prior",
            {
                "labelled": str(d / "labelled"),
                "heads": heads,
                "out_dir": str(junk / "p"),
                "extra_world": 0,
                "extra_depth": str(d / "no-extra"),
            },
            "no-extra",
        ),
        (
            "synthesize",
            {
                "base_model": base,
                "heads": heads,
                "prior": str(p / "no-prior"),
                "out_dir": str(junk / "s"),
                "num_samples": 2,
                "guidance": {"w_dc": 1.0, "w_dp": 1.0, "tau": 100},
                "variants": {"dag": {}},
                "metrics_file": None,
                "report_dir": None,
            },
            "no-prior",
        ),
        (
            "dfid",
            {
                "synthetic": str(d / "synthetic"),
                "variants": ["unguided", "dag"],
                "real": str(d / "synthetic/dag"),
                "estimator": str(m / "estimator"),
                "floor": str(d / "no-floor"),
                "metrics_file": str(junk / "d.json"),
            },
            "no-floor",
        ),
        (
            "sweep",
            {
                "base_model": base,
                "heads": heads,
                "prior": prior,
                "real": str(d / "synthetic/dag"),
                "estimator": str(m / "estimator"),
                "num_samples": 2,
                "batch_size": 2,
                "steps": 2,
                "modes": ["paper"],
                "scales": [1.0],
                "remedies": {},
                "floor": str(d / "no-floor"),
                "out_dir": str(junk / "sw"),
                "figure": str(junk / "sw.png"),
            },
            "no-floor",
        ),
        (
            "downstream",
            {
                **good,
                "train_sets": {**good["train_sets"], "late": str(d / "no-late-set")},
                "models_dir": str(p / "nets"),
                "metrics_file": str(junk / "n.json"),
                "table_file": str(junk / "n.md"),
                "curve_dir": str(junk / "nc"),
            },
            "downstream.train_sets.late",
        ),
    ]
    return [(stage, {stage: {**common, **group}}, [], needle) for stage, group, needle in groups]


# One real process runs every case through the stages' own entry point (``run_stage``, exactly
# what ``python -m flows.<stage>`` calls), with stderr captured at the file-descriptor level per
# case: the cases cost seconds, not the half minute of a cold torch + Prefect start each.
DRIVER = """
import importlib, json, os, sys, tempfile
cases = json.load(open(sys.argv[1]))
results = []
for stage, params, overrides in cases:
    fn = getattr(importlib.import_module(f"flows.{stage}"), stage)
    from flows.cli.run import run_stage
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
    assert len(cases) >= 51
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


# In a fresh process: each params check fails with the one ParamError, and neither torch nor
# Prefect has been imported by then (the check ran before the flow module loaded).
EARLY = """
import json, sys
from dag_core.errors import ParamError
from flows.cli.parse import stage_params
from flows.schema.stages import SCHEMAS
lines = []
for stage, params in json.load(open(sys.argv[1])):
    try:
        stage_params(SCHEMAS[stage], params, [])
    except ParamError as exc:
        lines.append(str(exc))
    else:
        lines.append(None)
heavy = sorted({"torch", "prefect", "diffusers"} & set(sys.modules))
json.dump({"lines": lines, "heavy": heavy}, open(sys.argv[2], "w"))
"""


def test_damaged_files_are_caught_before_prefect_or_torch(tmp_path: Path) -> None:
    """A VAE folder as the base model, heads weights cut short, 8-bit depth PNGs in a
    ``folder`` source, a corrupt metrics JSON and a cited plot that does not exist: each is
    one line by the params check (exit 2, nothing written), before Prefect or torch loads."""
    bad = write_bad_files(tmp_path)
    unet = tmp_path / "models/unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "sample_size": 8}))
    junk = tmp_path / "junk"
    cases = _file_cases(bad, unet, junk)
    runs = []
    for i, (stage, groups, _) in enumerate(cases):
        params = tmp_path / f"case-{i}.yaml"
        params.write_text(yaml.safe_dump(groups))
        runs.append([stage, str(params)])
    (tmp_path / "cases.json").write_text(json.dumps(runs))
    cmd = [sys.executable, "-c", EARLY, str(tmp_path / "cases.json"), str(tmp_path / "out.json")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["heavy"] == [], out["heavy"]
    for (_, _, needle), line in zip(cases, out["lines"], strict=True):
        assert line is not None and needle in line, (needle, line)
    before = _snapshot(tmp_path)
    for (stage, _, needle), (_, params) in zip(cases, runs, strict=True):  # the commands
        run = subprocess.run(
            [sys.executable, "-m", f"flows.{stage}", "--params", params],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 2, run.stderr[-2000:]
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: "), run.stderr
        assert needle in run.stderr, (needle, run.stderr)
    assert _snapshot(tmp_path) == before and not junk.exists()


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


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error: ")]


def test_hub_model_neither_cached_nor_reachable_is_one_line_at_once(
    project: dict[str, Any], tmp_path: Path
) -> None:
    """Not cached, hub unreachable: one line before Prefect or torch load (no retry loop).
    Cached, hub unreachable: the stage loads it from the cache offline (no retries) and pins it.
    """
    env = {
        **project["env"],
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens: offline
    }
    env.pop("HF_HUB_OFFLINE", None)
    out = tmp_path / "base"
    args = ["-m", "flows.base_model", "pretrained=test-org/tiny-ddpm", f"out_dir={out}"]
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert time.monotonic() - start < 10
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(
        "error: base_model.pretrained='test-org/tiny-ddpm': no such local folder, not in the "
        f"hub cache {tmp_path / 'hub'}, and the hub cannot be reached"
    ), run.stderr
    assert not out.exists()
    # the same id in the hub cache's layout: loaded offline, without huggingface_hub's retries
    revision = "0" * 40
    repo = tmp_path / "hub/models--test-org--tiny-ddpm"
    shutil.copytree(project["proj"] / "models/base", repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text(revision)
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr[-2000:] + run.stdout[-2000:]
    assert "Retrying" not in run.stdout
    assert json.loads((out / "pretrained.json").read_text())["pretrained"] == "test-org/tiny-ddpm"


def _limit_file_size(size: int) -> Any:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    return limit


def test_file_size_limit_keeps_the_earlier_report_and_names_the_file(
    project: dict[str, Any], tmp_path: Path
) -> None:
    """RLIMIT_FSIZE while the sample sheet is written: one line naming it, and the sheet of the
    earlier run is still there byte for byte (written to a temp file, renamed only when whole)."""
    data = tmp_path / "synthetic"
    shutil.copytree(project["proj"] / "data/synthetic", data)
    report = tmp_path / "report"
    report.mkdir()
    (report / "samples.png").write_bytes(b"the earlier run's sheet\n")
    before = _snapshot(tmp_path)
    params = tmp_path / "params.yaml"
    group = {**project["synth"], "out_dir": str(data), "report_dir": str(report)}
    group["metrics_file"] = str(tmp_path / "metrics.json")
    params.write_text(yaml.safe_dump({"synthesize": group}))
    run = subprocess.run(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=ROOT,
        env=project["env"],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_file_size(4096),  # shards are done; the sheet is the first big file
    )
    assert run.returncode == 2, run.stderr[-2000:] + run.stdout[-2000:]
    assert run.stderr == f"error: [Errno 27] File too large: {report / 'samples.png'}\n"
    after = _snapshot(tmp_path)
    assert after["report/samples.png"] == before["report/samples.png"]
    assert sorted(p.name for p in report.iterdir()) == ["samples.png"]  # no temp file left
    assert {k: v for k, v in after.items() if "/part-" in k} == {
        k: v for k, v in before.items() if "/part-" in k
    }


@pytest.fixture(scope="module")
def own_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PREFECT_HOME of runs without PREFECT_API_URL (each starts its own server there)."""
    return tmp_path_factory.mktemp("own-prefect")


def _own_env(home: Path) -> dict[str, str]:
    env = prefect_env(home)  # no PREFECT_API_URL: the command line starts its own server
    env.pop("PREFECT_API_URL", None)
    return env


def _wait_for(proc: subprocess.Popen[str], what: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert proc.poll() is None, f"exited {proc.returncode} before it was interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _server_children(pid: int) -> list[psutil.Process]:
    return [
        c
        for c in psutil.Process(pid).children(recursive=True)
        if "flows._server" in " ".join(c.cmdline())
    ]


def _clean_render(out: Path, models: dict[str, str], dest: Path) -> dict[str, dict[str, str]]:
    """The shards of ``out``'s run spec rendered uninterrupted in this process: their sha256
    by variant and file name (what the shard tasks do, without Prefect)."""
    from dag_core.runtime import RuntimeConfig
    from dag_core.synthesis import SynthesisSpec, load_models, render_shard

    spec = SynthesisSpec(**json.loads((out / "_run_spec.json").read_text()))
    rt = RuntimeConfig()
    loaded = load_models(models["base_model"], models["heads"], models["prior"], rt.apply())
    rt.prepare(loaded.unet, "cpu")
    digests = {}
    for variant in spec.variants:
        for k in range(spec.num_shards):
            render_shard(loaded, spec, variant, k, dest / variant, batch_size=2, runtime=rt)
        digests[variant] = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((dest / variant).glob("part-*.parquet"))
        }
    return digests


def test_ctrl_c_kill_9_and_resume(project: dict[str, Any], own_home: Path, tmp_path: Path) -> None:
    """Synthesis without a Prefect server configured (each run starts its own):

    * ``kill -9`` of the flow mid-run: its Prefect server goes away within seconds;
    * the same command, Ctrl-C to its whole process group mid-run: it stops within 10 s with one
      line ``error: interrupted; k/n shards written, rerun the same command to resume``, exit
      130, its server is gone, and ``python -m dag_core.shards verify`` names the unfinished
      variant (exit 2);
    * the same command again: it resumes to exactly the bytes of an uninterrupted run, and a
      successful run's stderr is empty.
    """
    out = tmp_path / "out"
    params = tmp_path / "params.yaml"
    group = {
        **project["synth"],
        "out_dir": str(out),
        "num_samples": 4,
        "steps": 8,
        "variants": {"dag": {}, "unguided": {"w_dc": 0.0, "w_dp": 0.0}},  # rendered in order
        "metrics_file": None,
    }
    params.write_text(yaml.safe_dump({"synthesize": group}, sort_keys=False))
    cmd = [sys.executable, "-m", "flows.synthesize", "--params", str(params)]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_own_env(own_home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group, as a shell gives a command
        )

    proc = start()
    try:
        _wait_for(proc, lambda: (out / "dag" / "part-00000.parquet").exists())
        servers = _server_children(proc.pid)
        assert len(servers) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(servers, timeout=10)
        assert not alive, "the Prefect server outlived kill -9 of its flow"

        proc = start()  # resumes dag at its shard 1
        _wait_for(proc, lambda: (out / "dag" / "part-00002.parquet").exists())
        servers = _server_children(proc.pid)
        stopped = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    match = re.fullmatch(
        r"error: interrupted; (\d+)/8 shards written, rerun the same command to resume\n", err
    )
    assert match and 3 <= int(match.group(1)) < 8, err
    assert took < 10, took
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive
    verify = subprocess.run(
        [sys.executable, "-m", "dag_core.shards", "verify", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 2 and _lines(verify.stderr), verify.stdout
    assert f"{out / 'dag'} is unfinished: " in verify.stdout, verify.stdout

    run = subprocess.run(
        cmd, cwd=ROOT, env=project["env"], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr[-3000:]
    models = {k: project["synth"][k] for k in ("base_model", "heads", "prior")}
    clean = _clean_render(out, models, tmp_path / "clean")
    for variant in ("unguided", "dag"):
        verify_dataset(out / variant)
        shards = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / variant).glob("part-*.parquet"))
        }
        assert shards == clean[variant]


def test_file_size_limit_on_the_prefect_database_is_one_line(
    project: dict[str, Any], own_home: Path, tmp_path: Path
) -> None:
    """The run's own Prefect server cannot write its database (file-size limit on the whole
    process tree): one line naming its log, exit 1, instead of ~1,700 lines of retries."""
    params = tmp_path / "params.yaml"
    group = {**project["synth"], "out_dir": str(tmp_path / "out"), "metrics_file": None}
    params.write_text(yaml.safe_dump({"synthesize": group}))
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=ROOT,
        env=_own_env(own_home),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_limit_file_size(32 * 1024),
    )
    assert run.returncode == 1, run.stderr[-2000:] + run.stdout[-2000:]
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith("error: the run's Prefect server ")
    assert str(own_home / "cli-server-") in run.stderr
    assert time.monotonic() - start < 240
    assert not list((tmp_path / "out").glob("*/_manifest.json"))


def test_sigterm_to_the_process_stops_a_training_stage(
    project: dict[str, Any], tmp_path: Path
) -> None:
    """SIGTERM to the process alone (its group untouched) while the depth prior trains in the
    main thread: stopped within 10 s, one line, exit 143, nothing written."""
    out = tmp_path / "prior"
    params = tmp_path / "params.yaml"
    group = {
        "labelled": str(project["proj"] / "data/labelled"),
        "heads": str(project["proj"] / "models/heads"),
        "out_dir": str(out),
        "extra_world": 0,
        "config": {"resolution": 16, "channels": [8, 16], "steps": 100000, "batch_size": 2},
    }
    params.write_text(yaml.safe_dump({"train_prior": group}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.train_prior", "--params", str(params)],
        cwd=ROOT,
        env=project["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "prior step 1/" in line:
                break
        else:
            pytest.fail(proc.stderr.read()[-3000:])  # type: ignore[union-attr]
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    assert err == (
        "error: interrupted; every output is written whole or not at all, rerun the same "
        "command to run the stage again\n"
    )
    assert took < 10, took
    assert not out.exists() and not list(tmp_path.glob(".prior*"))  # no partial folder


def _nets(models_dir: Path) -> dict[str, str]:
    """sha256 of every file of a downstream models_dir, by relative path."""
    return {
        str(p.relative_to(models_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(models_dir.rglob("*"))
        if p.is_file()
    }


def test_downstream_resumes_net_by_net_after_ctrl_c_and_kill_9(
    project: dict[str, Any], tmp_path: Path
) -> None:
    """``downstream`` (6 nets, 2 at a time, a finetune set continuing its alone set's run):
    Ctrl-C once a net is finished ends with ``error: interrupted; k/6 nets trained, ...``; the
    rerun keeps those nets, is killed with ``kill -9`` once it has finished one more, and the
    third run trains only the missing nets and ends with exactly the bytes of an uninterrupted
    run (nets, metrics, tables), its resume folder gone."""
    d = project["proj"] / "data"
    group = {
        **_good_downstream(d, tmp_path),
        "train_sets": {
            "dag": str(d / "synthetic/dag"),
            "labelled+dag": {"data": str(d / "synthetic/dag"), "regime": "finetune"},
            "unguided": str(d / "synthetic/unguided"),
        },
        "labelled": str(d / "labelled/train"),
        "runs": 2,
        "workers": 2,
        "n_boot": 200,
        "config": {"resolution": 16, "channels": [8, 16], "steps": 60, "batch_size": 2},
        "runtime": {"device": "cpu"},
    }

    def params(name: str) -> Path:
        out = tmp_path / name
        file = tmp_path / f"{name}.yaml"
        paths = {
            "models_dir": str(out / "nets"),
            "metrics_file": str(out / "m.json"),
            "table_file": str(out / "m.md"),
            "curve_dir": str(out / "c"),
        }
        file.write_text(yaml.safe_dump({"downstream": {**group, **paths}}))
        return file

    clean = _stage("downstream", params("clean"), project["env"])
    assert clean.returncode == 0 and clean.stderr == "", clean.stderr[-3000:]
    resumed = params("resumed")
    work = tmp_path / "resumed/.nets.resume"
    cmd = [sys.executable, "-m", "flows.downstream", "--params", str(resumed)]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=project["env"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def finished() -> int:  # nets recorded as finished in the resume folder
        return len(list(work.glob("*/.seed-*.done.json")))

    proc = start()
    try:
        _wait_for(proc, lambda: finished() >= 1)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    match = re.fullmatch(
        r"error: interrupted; (\d+)/6 nets trained, rerun the same command to resume\n", err
    )
    assert match and 1 <= int(match.group(1)) < 6, err
    kept = int(match.group(1))
    assert finished() == kept and not (tmp_path / "resumed/nets").exists()

    proc = start()
    try:
        _wait_for(proc, lambda: finished() > kept)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    kept = finished()
    assert kept < 6

    run = _stage("downstream", resumed, project["env"])
    assert run.returncode == 0 and run.stderr == "", run.stderr[-3000:]
    assert f"{kept}/6 nets already trained" in run.stdout, run.stdout[-3000:]
    assert run.stdout.count("net saved in") == 6 - kept  # only the missing nets trained
    assert not work.exists()
    assert _nets(tmp_path / "resumed/nets") == _nets(tmp_path / "clean/nets")
    resumed_dir, clean_dir = tmp_path / "resumed", tmp_path / "clean"
    for name in ("m.json", "m.md"):
        assert (resumed_dir / name).read_bytes() == (clean_dir / name).read_bytes(), name


def _weight_stages(
    p: Path, out: Path, labelled32: Path
) -> list[tuple[str, dict[str, Any], Path, str]]:
    """(stage, its group, its output folder, the file its error must name: a regex under that
    folder) for every stage that writes weights, each writing to ``out``; tiny settings
    (``labelled32``: labelled pairs at the base model's 32 px, for the heads)."""
    d, m = p / "data", p / "models"
    net = {"resolution": 16, "channels": [8, 16], "steps": 3, "batch_size": 2}
    base_train = {
        "resolution": 32,
        "channels": [8, 8, 16, 16, 16, 16],
        "steps": 2,
        "batch_size": 2,
        "preview_samples": 0,
    }
    return [
        (
            "base_model",
            {"pretrained": None, "out_dir": str(out / "base"), "train": base_train},
            out / "base",
            "unet/diffusion_pytorch_model.safetensors",
        ),
        (
            "train_heads",
            {
                "base_model": str(m / "base"),
                "labelled": str(labelled32),
                "out_dir": str(out / "heads"),
                "config": {"hidden": [16], "time_dim": 8, "steps": 2, "batch_size": 2},
                "eval_t": [0],
                "metrics_file": str(out / "heads.json"),
                "plots_file": str(out / "heads.csv"),
            },
            out / "heads",
            "heads.safetensors",
        ),
        (
            "train_prior",
            {
                "labelled": str(d / "labelled"),
                "heads": str(m / "heads"),
                "out_dir": str(out / "prior"),
                "extra_world": 0,
                "config": {"resolution": 16, "channels": [8, 16], "steps": 2, "batch_size": 2},
            },
            out / "prior",
            "unet/diffusion_pytorch_model.safetensors",
        ),
        (
            "reference",
            {
                "resolution": 16,
                "n_train": 2,
                "n_test": 1,
                "n_floor": 0,
                "data_dir": str(out / "reference-data"),
                "out_dir": str(out / "estimator"),
                "config": net,
            },
            out / "estimator",
            "depth_net.safetensors",
        ),
        (
            "downstream",
            {
                **_good_downstream(d, out),
                "models_dir": str(out / "nets"),
                "config": net,
                "workers": 1,
            },
            out / ".nets.resume",  # where a net is written (kept if the run stops) until all are
            r"(dag|unguided)/seed-0/depth_net\.safetensors",
        ),
    ]


def test_file_size_limit_while_weights_are_written_names_the_file(
    project: dict[str, Any], tmp_path: Path
) -> None:
    """RLIMIT_FSIZE below the size of the weights, for every stage that writes weights
    (safetensors of its own and through diffusers' ``save_pretrained``): exit 2, one line
    ``error: [Errno 27] File too large: <the weights file under the stage's output>`` (not a
    temporary name), no traceback, the earlier output byte for byte and no temporary litter.
    One driver process runs the stages in turn under the limit (a cold start each would cost
    minutes)."""
    from dag_core.shards import Sample, write_dataset
    from dag_core.world import iter_scenes

    proj, out = project["proj"], tmp_path / "out"
    labelled32 = tmp_path / "labelled32"
    for split, start in (("train", 0), ("heldout", 3)):
        samples = (
            Sample(id=f"world-{s:09d}", rgb=rgb, depth=d, seed=s, source="world")
            for s, rgb, d in iter_scenes(start, 3, 32)
        )
        write_dataset(labelled32 / split, samples, shard_size=3, depth_dtype="float16")
    stages = _weight_stages(proj, out, labelled32)
    earlier = {  # each output folder holds an earlier run's output
        "base": proj / "models/base",
        "heads": proj / "models/heads",
        "prior": proj / "models/prior",
        "estimator": proj / "models/estimator",
        "nets": proj / "nets",
    }
    for name, source in earlier.items():
        shutil.copytree(source, out / name)
    before = {name: _snapshot(out / name) for name in earlier}
    runs = []
    for stage, group, _, _ in stages:
        params = tmp_path / f"{stage}.yaml"
        params.write_text(yaml.safe_dump({stage: {"runtime": {"device": "cpu"}, **group}}))
        runs.append([stage, str(params), []])
    (tmp_path / "cases.json").write_text(json.dumps(runs))
    results_file = tmp_path / "results.json"
    cmd = [sys.executable, "-c", DRIVER, str(tmp_path / "cases.json"), str(results_file)]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=project["env"],
        capture_output=True,
        text=True,
        timeout=900,
        preexec_fn=_limit_file_size(16 * 1024),  # every weights file is larger, the rest smaller
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(results_file.read_text())
    failures = []
    for (stage, _, folder, name), (code, stderr) in zip(stages, results, strict=True):
        line = re.escape(f"error: [Errno 27] File too large: {folder}/") + name + "\n"
        if code != 2 or not re.fullmatch(line, stderr):
            failures.append(f"{stage}: exit {code}\n{stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)
    assert {name: _snapshot(out / name) for name in earlier} == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp folder left


KILLED_WRITER = """
import sys, time
from dag_core.atomic import atomic_path, replace_dir
target = sys.argv[1]
with replace_dir(target) as tmp, atomic_path(target + ".json") as part:
    (tmp / "half.safetensors").write_bytes(b"half")
    part.write_text("half")
    print("writing", flush=True)
    time.sleep(600)
"""


def test_kill_9_litter_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """``kill -9`` while a stage builds its output folder and a file: the hidden temporary
    folder and file stay behind, and the next ``replace_dir`` / ``atomic_path`` of the same
    target removes them; a live writer's (pid alive) and names not of that form are kept."""
    from dag_core.atomic import atomic_path, replace_dir

    target = tmp_path / "models"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=30)
    litter = sorted(p.name for p in tmp_path.iterdir())
    assert len(litter) == 2 and litter[0] == f".models.json.tmp-{proc.pid}", litter
    assert re.fullmatch(rf"\.models\.tmp-{proc.pid}-[0-9a-f]{{8}}", litter[1]), litter
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        kept = [
            f".models.tmp-{sleeper.pid}-0123abcd",  # a live run's folder
            f".models.json.tmp-{sleeper.pid}",  # a live run's file
            f".models.tmp-{os.getpid()}-89abcdef",
            ".models.tmp-x",  # not a name of the atomic layer
            f".other.tmp-{proc.pid}-0123abcd",  # another target's
        ]
        for name in kept:
            if "json" in name:
                (tmp_path / name).touch()
            else:
                (tmp_path / name).mkdir()
        with replace_dir(target) as tmp:
            (tmp / "weights.safetensors").write_bytes(b"whole")
        with atomic_path(tmp_path / "models.json") as part:
            part.write_text("{}\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [*kept, "models", "models.json"]
        )
    finally:
        sleeper.kill()
        sleeper.wait(timeout=30)
