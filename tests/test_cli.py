"""The shared stage command line: params groups, overrides, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow

from dag_core.errors import DagError
from flows._cli import flow_kwargs, load_params, run_stage

ROOT = Path(__file__).resolve().parents[1]


@flow(name="cli-probe")
def _probe(n: int = 1, name: str = "x") -> tuple[int, str]:
    return n, name


def test_load_params_reads_one_group(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("depth_norm:\n  n: 3\nsynthesize:\n  n: 4\n")
    assert load_params(p, "synthesize") == {"n": 4}
    with pytest.raises(DagError, match="params group 'reference' not found"):
        load_params(p, "reference")  # never the flow's built-in defaults
    p.write_text("synthesise:\n  n: 3\nsynthesize:\n  n: 4\n")
    with pytest.raises(DagError, match=r"unknown top-level key.* synthesise"):
        load_params(p, "synthesize")


def test_flow_kwargs_rejects_unknown_names() -> None:
    with pytest.raises(DagError, match=r"unknown parameter.*nn"):
        flow_kwargs(_probe, {"nn": 2})
    assert flow_kwargs(_probe, {"n": 2}) == {"n": 2}


def test_bad_params_file_and_override_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        run_stage(_probe, "probe", ["--params", str(tmp_path / "nope.yaml")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params file not found") and err.count("\n") == 1
    p = tmp_path / "params.yaml"
    p.write_text("probe:\n  n: 3\n")
    with pytest.raises(SystemExit):
        run_stage(_probe, "probe", ["--params", str(p), "oops"])
    assert "override 'oops' is not of the form key=value" in capsys.readouterr().err


def test_stage_module_reports_bad_value_in_one_line(tmp_path: Path) -> None:
    """A real stage process: wrong source kind ends with exit 2 and one line naming it."""
    params = tmp_path / "params.yaml"
    out = tmp_path / "out"
    params.write_text(f"label_subset:\n  source: lsun\n  resolution: 32\n  out_dir: {out}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.label_subset", "--params", str(params)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "lsun" in errors[0]
    assert not out.exists()


def test_pipeline_flow_lists_every_dvc_stage_and_rejects_unknown_ones() -> None:
    """`python -m flows.pipeline` runs the same stages, in the same order, as dvc.yaml."""
    import yaml

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
    from flows._cli import run_cli
    from tests.test_shards import make_samples

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: (blocker / "out").mkdir(parents=True))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Not a directory: ")
    assert str(blocker / "out") in err

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SystemExit):
        run_cli(lambda: shards.write_shard(tmp_path / "ds", 0, make_samples(2)))
    err = capsys.readouterr().err
    assert err == f"error: No space left on device: {tmp_path / 'ds' / 'part-00000.parquet'}\n"
    assert not any((tmp_path / "ds").iterdir())  # no partial file left behind


def test_pipeline_checks_every_stage_before_the_first_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value in the last stage stops the pipeline before base_model trains anything."""
    import yaml

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
    assert err == f"error: table_file={tmp_path}: is a folder, expected a file\n"
    assert not (tmp_path / "base").exists()
    params["downstream"]["n_epochs"] = 3
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit):
        main(["--params", str(path), "base_model", "downstream"])
    assert "unknown parameter(s) n_epochs" in capsys.readouterr().err
