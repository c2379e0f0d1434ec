"""The shared stage command line: params groups, overrides, early checks and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dag_core.errors import DagError, RunInterrupted
from flows._params import apply_overrides, load_group, read_group, stage_defaults
from flows.cli.run import run_cli, run_stage
from flows.schema.stages import validate_stage
from flows.schema.synthesize import SynthesizeParams

ROOT = Path(__file__).resolve().parents[1]


def _never(**kwargs: object) -> None:
    raise AssertionError("the flow must not run")


def test_read_group_and_load_group(tmp_path: Path) -> None:
    """A params file's group as written; for a run, merged over params.yaml's (whole keys)."""
    p = tmp_path / "params.yaml"
    p.write_text("depth_norm:\n  kind: log\nsynthesize:\n  num_samples: 4\n  guidance: {w_dc: 1}\n")
    assert read_group(p, "synthesize") == {"num_samples": 4, "guidance": {"w_dc": 1}}
    merged = load_group(p, "synthesize")
    defaults = stage_defaults("synthesize")
    assert set(merged) == set(defaults)
    assert merged["num_samples"] == 4 and merged["steps"] == defaults["steps"]
    assert merged["guidance"] == {"w_dc": 1}  # a key the file gives replaces the whole value
    with pytest.raises(DagError, match="params group 'reference' not found"):
        load_group(p, "reference")  # never the built-in defaults for a group the file lacks
    p.write_text("synthesise:\n  n: 3\nsynthesize:\n  n: 4\n")
    with pytest.raises(DagError, match=r"unknown top-level key.* synthesise"):
        load_group(p, "synthesize")


def test_dotted_overrides_merge_into_the_group() -> None:
    group = stage_defaults("synthesize")
    out = apply_overrides(
        group,
        [
            "guidance.w_dc=0.5",
            "runtime.device=cpu",
            "variants.dcg.w_dp=0.25",
            "variants.new.tau=7",
            "steps=3",
        ],
    )
    assert out["guidance"] == {**group["guidance"], "w_dc": 0.5}
    assert out["runtime"] == {**group["runtime"], "device": "cpu"}
    assert out["variants"]["dcg"] == {"w_dp": 0.25} and out["variants"]["new"] == {"tau": 7}
    assert out["steps"] == 3
    assert group == stage_defaults("synthesize")  # the input is not changed
    whole = apply_overrides(group, ["guidance={w_dc: 1}"])
    assert whole["guidance"] == {"w_dc": 1}  # key=mapping still replaces the whole key
    checked = validate_stage("synthesize", out, files=False)
    assert checked["guidance"]["w_dc"] == 0.5
    with pytest.raises(DagError, match=r"synthesize\.guidance\.w_dc=-2: must be >= 0"):
        validate_stage("synthesize", apply_overrides(group, ["guidance.w_dc=-2"]), files=False)
    with pytest.raises(DagError, match=r"unknown setting\(s\) synthesize\.runtime\.devcie"):
        validate_stage("synthesize", apply_overrides(group, ["runtime.devcie=cpu"]), files=False)
    with pytest.raises(DagError, match="steps is 20, not a mapping"):
        apply_overrides(group, ["steps.x=1"])
    with pytest.raises(DagError, match="empty part"):
        apply_overrides(group, ["guidance..w_dc=1"])
    with pytest.raises(DagError, match="not of the form key=value"):
        apply_overrides(group, ["guidance.w_dc"])


def test_validate_stage_names_the_dotted_key_and_value() -> None:
    d = stage_defaults("synthesize")
    cases = [
        ({"nn": 2}, r"unknown parameter\(s\) synthesize\.nn; expected some of: runtime, "),
        ({"steps": "3"}, r"synthesize\.steps='3': expected an int"),
        ({"steps": True}, r"synthesize\.steps=True: expected an int"),
        ({"eta": 0.5, "sampler": "ddpm"}, r"synthesize\.eta=0\.5: only applies to the ddim"),
        ({"variants": {"dag": {"tau": -1}}}, r"synthesize\.variants\.dag\.tau=-1: must be an"),
        ({"variants": {}}, r"synthesize\.variants=\{\}: needs at least 1 item"),
        ({"guidance": {**d["guidance"], "window": [0.6, 0.2]}}, r"guidance\.window=\(0\.6, 0\.2"),
        ({"task_runner": {"kind": "spark"}}, r"task_runner\.kind='spark': expected one of"),
    ]
    for change, match in cases:
        with pytest.raises(DagError, match=match):
            validate_stage("synthesize", {**d, **change}, files=False)
    group = {k: v for k, v in d.items() if k != "steps"}
    with pytest.raises(DagError, match=r"synthesize\.steps: missing"):
        validate_stage("synthesize", group, files=False)


def test_bad_params_file_and_override_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        run_stage(_never, SynthesizeParams, ["--params", str(tmp_path / "nope.yaml")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params file not found") and err.count("\n") == 1
    p = tmp_path / "params.yaml"
    p.write_text("synthesize:\n  steps: 3\n")
    with pytest.raises(SystemExit):
        run_stage(_never, SynthesizeParams, ["--params", str(p), "oops"])
    assert "override 'oops' is not of the form key=value" in capsys.readouterr().err


def test_interrupted_runs_are_not_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert not issubclass(RunInterrupted, DagError)

    def interrupted() -> None:
        raise RunInterrupted("variant dag: the task runner lost a worker; rerun to resume")

    with pytest.raises(SystemExit) as exc:
        run_cli(interrupted, prefect=False)
    assert exc.value.code == 1
    assert capsys.readouterr().err == (
        "error: variant dag: the task runner lost a worker; rerun to resume\n"
    )


def _stage(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("stage", "override", "line"),
    [
        ("synthesize", "steps=0", "error: synthesize.steps=0: must be >= 1"),
        ("downstream", "config.steps=0", "error: downstream.config.steps=0: must be >= 3"),
        ("sweep", "scales=[1, x]", "error: sweep.scales[1]='x': expected a number"),
        ("train_heads", "norm.kind=cubic", "error: train_heads.norm.kind='cubic': expected one"),
        ("labellers", "reference=nope", "error: labellers.reference names unknown labeller(s)"),
    ],
)
def test_bad_value_is_one_line_before_prefect_or_torch(
    stage: str, override: str, line: str
) -> None:
    """``python -m flows.<stage>`` checks the whole group before the flow module (Prefect,
    torch, diffusers) is imported: exactly one line, exit 2, and none of them loaded."""
    proc = _stage("-m", f"flows.{stage}", override)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""
    timed = _stage("-X", "importtime", "-m", f"flows.{stage}", override)
    assert timed.returncode == 2
    imported = {
        row.rsplit("|", 1)[-1].strip().split(".")[0]
        for row in timed.stderr.splitlines()
        if row.startswith("import time:")
    }
    assert {"yaml", "pydantic", "dag_core", "flows"} <= imported  # the log is what we think
    assert not imported & {"prefect", "torch", "diffusers", "numpy", "pyarrow"}, imported


def test_stage_module_reports_bad_value_in_one_line(tmp_path: Path) -> None:
    """A real stage process: wrong source kind ends with exit 2 and one line naming it."""
    params = tmp_path / "params.yaml"
    out = tmp_path / "out"
    params.write_text(f"label_subset:\n  source: lsun\n  resolution: 32\n  out_dir: {out}\n")
    proc = _stage("-m", "flows.label_subset", "--params", str(params))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "lsun" in errors[0]
    assert not out.exists()


def test_pipeline_flow_lists_every_dvc_stage_and_rejects_unknown_ones() -> None:
    """`python -m flows.pipeline` runs the same stages, in the same order, as dvc.yaml."""
    from flows.pipeline import STAGES, main

    dvc_stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert list(STAGES) == dvc_stages
    with pytest.raises(SystemExit) as exc:
        main(["--params", str(ROOT / "params.yaml"), "base_model", "lsun_stage"])
    assert exc.value.code == 2


def test_os_errors_are_one_line_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real OS error (writing under a file) and a full disk while a shard is written."""
    import errno
    import os

    from dag_core import shards
    from tests.test_shards import make_samples

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: (blocker / "out").mkdir(parents=True))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: [Errno 20] Not a directory: ")
    assert str(blocker / "out") in err

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SystemExit):
        run_cli(lambda: shards.write_shard(tmp_path / "ds", 0, make_samples(2)))
    err = capsys.readouterr().err
    path = tmp_path / "ds" / "part-00000.parquet"
    assert err == f"error: [Errno {errno.ENOSPC}] No space left on device: {path}\n"
    assert not any((tmp_path / "ds").iterdir())  # no partial file left behind


def test_pipeline_checks_every_stage_before_the_first_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value in the last stage stops the pipeline before base_model trains anything."""
    from flows.pipeline import main

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["base_model"]["out_dir"] = str(tmp_path / "base")
    params["downstream"]["table_file"] = str(tmp_path)  # a folder where a file must be
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as exc:
        main(["--params", str(path), "base_model", "downstream"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: downstream.table_file={str(tmp_path)!r}: is a folder, expected a file\n"
    assert not (tmp_path / "base").exists()
    params["downstream"]["n_epochs"] = 3
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit):
        main(["--params", str(path), "base_model", "downstream"])
    assert "unknown parameter(s) downstream.n_epochs" in capsys.readouterr().err


def test_process_defaults_are_set_once_for_flows_and_tasks() -> None:
    """``import flows`` (every stage command) and ``import tasks`` (a worker) get the same four
    defaults from :mod:`dag_core.process`, which loads neither Prefect nor torch; a value the
    caller set wins."""
    names = ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "OMP_WAIT_POLICY")
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the caller's choice
    want = {
        "PREFECT_HOME": str(ROOT / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "OMP_WAIT_POLICY": "ACTIVE",
    }
    for package, prefect in (("dag_core.process", False), ("flows", False), ("tasks", True)):
        code = (
            f"import json, os, sys, {package}\n"
            f"print(json.dumps([{{n: os.environ.get(n) for n in {names!r}}}, "
            "'torch' in sys.modules, 'prefect' in sys.modules]))"
        )
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-2000:]
        got, torch_loaded, prefect_loaded = json.loads(run.stdout.splitlines()[-1])
        assert (got, torch_loaded, prefect_loaded) == (want, False, prefect), package
